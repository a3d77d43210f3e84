"""HTTP pages for ``tests/test_static.py``: test_project's, plus ``/websocket-js/``.

``/websocket-js/`` loads ``websocket.js`` with ``{% static %}``, as a user's template does,
and opens a ``DjangoWebSocket`` to the echo view, which it sends one message on open.
``#status`` says "loading" until the script has run, then the client's status; ``#log``
lists what came back.
"""

from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import path

from test_project.urls import urlpatterns as demo_urlpatterns

MESSAGE = "hello from websocket.js"

PAGE = """{% load static websockets %}<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><link rel="icon" href="data:,"><title>websocket.js</title></head>
<body>
  <p id="status">loading</p>
  <ul id="log"></ul>
  <script src="{% static 'django_websocket/websocket.js' %}"></script>
  <script>
    const socket = new DjangoWebSocket("{% websocket_url 'echo' %}", {
      onstatus(text) { document.getElementById("status").textContent = text; },
      onopen() { socket.send("{{ message }}"); },
      onmessage(data) {
        const item = document.createElement("li");
        item.textContent = data;
        document.getElementById("log").appendChild(item);
      },
    });
  </script>
</body>
</html>
"""


def websocket_js(request: HttpRequest) -> HttpResponse:
    """The page above, rendered with the request (``{% websocket_url %}`` needs it)."""
    template = engines["django"].from_string(PAGE)
    return HttpResponse(template.render({"message": MESSAGE}, request))


urlpatterns = [path("websocket-js/", websocket_js, name="websocket-js"), *demo_urlpatterns]
