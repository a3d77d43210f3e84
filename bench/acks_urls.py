"""The websocket views of ``bench/acks.py`` (``WEBSOCKET_URLCONF`` in ``bench/acks_settings.py``).

All three read ``events()``, so that they differ only in the answer, never in the database:

* ``/echo/`` sends each client message back (the reference: one round trip, no acks);
* ``/ack/`` answers each acknowledged message with its ack (``websocket.ack()``), no deduplication;
* ``/acked/`` processes each one inside ``websocket.acknowledging()``: a ``SET NX EX`` on the
  broker's Redis per message, then the ack (what a view that deduplicates through the broker pays).
"""

from django.urls import path

from django_websocket.decorators import websocket
from django_websocket.events import ClientMessage


@websocket
def echo(request, ws):
    for event in ws.events():
        if isinstance(event, ClientMessage):
            ws.send(event.data)


@websocket
def ack(request, ws):
    for event in ws.events():
        if isinstance(event, ClientMessage):
            ws.ack(event)


@websocket
def acked(request, ws):
    for event in ws.events():
        if isinstance(event, ClientMessage):
            with ws.acknowledging(event, scope="bench"):
                pass  # the processing itself: nothing, so that only the mark and the ack are timed


urlpatterns = [
    path("echo/", echo, name="echo"),
    path("ack/", ack, name="ack"),
    path("acked/", acked, name="acked"),
]
