"""The websocket view of ``bench/orm.py`` (``WEBSOCKET_URLCONF`` in ``bench/orm_settings.py``).

``/orm/<room_id>/``: for every message the client sends, one ``Message`` row of test_project's
chat models is inserted with the ORM and its id is sent back as text. The view is written the
way the README writes views: no connection handling of its own — giving the connection back
while the view waits for the client is the framework's job.
"""

from django.urls import path

from django_websocket.decorators import websocket
from test_project.models import Message


@websocket
def orm_write(request, ws, room_id):
    for message in ws:
        row = Message.objects.create(room_id=room_id, handle="bench", message=message)
        ws.send(str(row.pk))


urlpatterns = [
    path("orm/<int:room_id>/", orm_write, name="orm"),
]
