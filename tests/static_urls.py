"""HTTP pages for ``tests/test_static.py``: test_project's, plus ``/websocket-js/`` and ``/websocket-esm/``.

``/websocket-js/`` loads ``websocket.js`` with ``{% static %}``, as a user's template does,
and opens a ``DjangoWebSocket`` to the echo view, which it sends one message on open.
``#status`` says "loading" until the script has run, then the client's status; ``#log``
lists what came back.

``/websocket-esm/`` does the same through the ES module, ``websocket.esm.js``, imported in a
``<script type="module">`` by the name an import map gives it (as docs/topics/channels.md
shows), with ``json: true``: it sends ``{"text": MESSAGE}`` and lists the ``text`` of what
comes back.
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


MODULE_PAGE = """{% load static websockets %}<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><link rel="icon" href="data:,"><title>websocket.esm.js</title></head>
<body>
  <p id="status">loading</p>
  <ul id="log"></ul>
  <script type="importmap">
    {"imports": {"django_websocket/websocket.esm.js": "{% static 'django_websocket/websocket.esm.js' %}"}}
  </script>
  <script type="module">
    import { DjangoWebSocket } from "django_websocket/websocket.esm.js";

    const socket = new DjangoWebSocket("{% websocket_url 'echo' %}", {
      json: true,
      onstatus(text) { document.getElementById("status").textContent = text; },
      onopen() { this.sendJSON({text: "{{ message }}"}); },
      onmessage(data) {
        const item = document.createElement("li");
        item.textContent = data.text;
        document.getElementById("log").appendChild(item);
      },
    });
  </script>
</body>
</html>
"""


def render(request: HttpRequest, page: str) -> HttpResponse:
    """*page*, rendered with the request (``{% websocket_url %}`` needs it)."""
    return HttpResponse(engines["django"].from_string(page).render({"message": MESSAGE}, request))


def websocket_js(request: HttpRequest) -> HttpResponse:
    """The classic script's page."""
    return render(request, PAGE)


def websocket_esm(request: HttpRequest) -> HttpResponse:
    """The ES module's page."""
    return render(request, MODULE_PAGE)


urlpatterns = [
    path("websocket-js/", websocket_js, name="websocket-js"),
    path("websocket-esm/", websocket_esm, name="websocket-esm"),
    *demo_urlpatterns,
]
