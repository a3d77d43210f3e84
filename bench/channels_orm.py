"""The Channels side of ``bench/orm.py``: the same insert as ``bench/orm_urls.py``, under Daphne.

``daphne bench.channels_orm:application`` with ``DJANGO_SETTINGS_MODULE=bench.orm_settings`` (the
same settings and database as ours). Websockets go through what Channels offers in place of
Django's middleware — ``AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(...)))``, the
stack of Channels' tutorial — to one of two consumers, each inserting one ``Message`` per client
message and sending back its id:

* ``/orm/async/<room_id>/`` — ``AsyncWebsocketConsumer``, the insert in ``database_sync_to_async``;
* ``/orm/sync/<room_id>/`` — ``WebsocketConsumer``, the insert inline (Channels runs every sync
  consumer's handlers through ``database_sync_to_async`` itself).

``database_sync_to_async`` calls ``close_old_connections()`` before and after each call, so the
connection goes back to Django's pool after every insert.

``/echo/`` — ``AsyncWebsocketConsumer`` sending every message back unchanged, behind the same
stack: ``bench/memory.py``'s and ``bench/run.py``'s Channels reference (idle memory per socket, echo,
handshakes).

``/whoami/`` — ``bench/run.py``'s logged-in handshake: ``AuthMiddlewareStack`` loads the session and
the user for every handshake (as Django's middleware and ``login_required`` do for ours); an
anonymous socket is closed before it is accepted (a 403), a logged-in one gets its username, then
waits for the client to close.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.orm_settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi = get_asgi_application()  # sets Django up before the models are imported

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.db import database_sync_to_async  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from test_project.models import Message  # noqa: E402


def insert(room_id: int, text: str) -> int:
    return Message.objects.create(room_id=room_id, handle="bench", message=text).pk


class AsyncWrite(AsyncWebsocketConsumer):
    async def connect(self):
        self.room_id = self.scope["url_route"]["kwargs"]["room_id"]
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        pk = await database_sync_to_async(insert)(self.room_id, text_data)
        await self.send(text_data=str(pk))


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


class WhoAmI(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close()
            return
        await self.accept()
        await self.send(text_data=user.username)


class SyncWrite(WebsocketConsumer):
    def connect(self):
        self.room_id = self.scope["url_route"]["kwargs"]["room_id"]
        self.accept()

    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=str(insert(self.room_id, text_data)))


application = ProtocolTypeRouter(
    {
        "http": django_asgi,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter(
                    [
                        path("orm/async/<int:room_id>/", AsyncWrite.as_asgi()),
                        path("orm/sync/<int:room_id>/", SyncWrite.as_asgi()),
                        path("echo/", Echo.as_asgi()),
                        path("whoami/", WhoAmI.as_asgi()),
                    ]
                )
            )
        ),
    }
)
