from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("test_project", "0001_chat")]

    operations = [
        migrations.AddField(
            model_name="message",
            name="client_id",
            field=models.CharField(blank=True, max_length=128, null=True, unique=True),
        ),
    ]
