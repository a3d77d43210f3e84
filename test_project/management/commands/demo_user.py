"""``manage.py demo_user``: create (or reset) the user ``demo`` with password ``demo``."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

USERNAME = "demo"
PASSWORD = "demo"


class Command(BaseCommand):
    help = "Create or update the demo user (username 'demo', password 'demo'). Safe to run repeatedly."

    def handle(self, *args, **options):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=USERNAME)
        user.set_password(PASSWORD)
        user.is_active = True
        user.save()
        verb = "Created" if created else "Updated"
        self.stdout.write(self.style.SUCCESS(f"{verb} user {USERNAME!r} with password {PASSWORD!r}."))
