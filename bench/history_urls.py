"""The websocket views of ``bench/history.py`` (``WEBSOCKET_URLCONF`` in ``bench/history_settings.py``).

* ``/fanout/<room>/`` forwards ``fanout:<room>`` (``forward=True``, no resume): the hub writes every
  message's data to the client as it was published, with or without an id;
* ``/resume/<room>/`` forwards ``resume:<room>`` in the resume protocol (``docs/topics/history.md``): the
  client's ``?since=resume:<room>@<id>`` gets what came after that id, then ``{"ws": "subscribed"…}``.

Both then read and drop whatever the client sends, until it closes. Neither touches the database.
"""

from django.urls import path

from django_websocket.decorators import websocket
from test_project import converters  # noqa: F401  (registers <room:...>)


@websocket
def fanout(request, ws, room):
    ws.subscribe(f"fanout:{room}", forward=True)
    for _message in ws:
        pass


@websocket
def resume(request, ws, room):
    ws.subscribe(f"resume:{room}", forward=True, resume=True)
    for _message in ws:
        pass


urlpatterns = [
    path("fanout/<room:room>/", fanout, name="fanout"),
    path("resume/<room:room>/", resume, name="resume"),
]
