"""nginx in front of gunicorn: the files in ``test_project/deploy/``, rendered and run.

Each layout runs real gunicorns (``tests.servers``, port 0) behind a real nginx on a
free 127.0.0.1 port. nginx runs in the foreground with every path inside a temporary
prefix (``nginx-main.conf``), so no root is needed. The site files are templates:
:func:`render` fills their ``${NAME}`` placeholders as ``envsubst`` with a variable
list does, and ``docs/howto/deployment.md`` embeds the same files verbatim.

nginx serves ``/static/`` itself from ``STATIC_ROOT``: a directory that a real
``manage.py collectstatic --noinput`` fills once per session (:func:`static_root`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.pages import browser_page
from tests.servers import ROOT, Server, gunicorn, tail
from tests.static_urls import MESSAGE
from tests.test_browser import TIMEOUT_MS, browser  # noqa: F401  (browser: Chromium, per module)

DEPLOY = ROOT / "test_project" / "deploy"
SITES = ["nginx-single-upstream.conf", "nginx-two-upstreams.conf", "nginx-tls.conf"]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PROBE = DEPLOY / "websocket_probe.py"

#: The browser client, as ``{% static %}`` names it with Django's default storage.
SCRIPT = "/static/django_websocket/websocket.js"
JAVASCRIPT_TYPES = ("text/javascript", "application/javascript")

pytestmark = pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed")

#: ``${NAME}`` with an upper-case name; nginx's own variables (``$host``, ``${http_host}``) are lower case.
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def render(template: Path, values: Mapping[str, str]) -> str:
    """Return *template* with ``${NAME}`` replaced for every NAME in *values*.

    What ``envsubst '${NAME} ...'`` does: placeholders not in *values*, and nginx's own
    variables, are left as they are (``test_render_is_envsubst`` compares the two).
    """
    return PLACEHOLDER.sub(lambda match: values.get(match[1], match[0]), template.read_text())


def free_port() -> int:
    """A port nothing listens on right now (nginx cannot bind port 0 and say which it got)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def global_directives() -> str:
    """``-g`` for nginx: the foreground, and as root workers that can enter pytest's private temp dirs."""
    return "daemon off; user root;" if os.geteuid() == 0 else "daemon off;"


def write_config(prefix: Path, site: str, values: Mapping[str, str]) -> Path:
    """Render *site* and ``nginx-main.conf`` (which includes it) into *prefix*; return the main file."""
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "site.conf").write_text(render(DEPLOY / site, values))
    main = prefix / "nginx.conf"
    main.write_text(render(DEPLOY / "nginx-main.conf", {"SITE_CONF": "site.conf"}))
    return main


class Nginx:
    """A running nginx: ``port`` (its ``LISTEN``), ``ports`` by variable name, its logs, its ``upstreams``."""

    def __init__(
        self, process: subprocess.Popen, prefix: Path, ports: dict[str, int], upstreams: Sequence[Server] = ()
    ) -> None:
        self.process = process
        self.prefix = prefix
        self.ports = ports
        self.port = ports["LISTEN"]
        self.upstreams = upstreams

    @property
    def error_log(self) -> str:
        return _read(self.prefix / "error.log")

    def log_sections(self) -> list[tuple[str, str]]:
        """nginx's error and access logs, then each upstream gunicorn's: what a failing test shows."""
        sections = [
            (f"nginx {name}", tail(_read(self.prefix / name))) for name in ("error.log", "access.log")
        ]
        for server in dict.fromkeys(self.upstreams):  # the two layouts' one gunicorn, once
            sections += server.log_sections()
        return sections

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def origin(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def wait_for_error_log(self, pattern: str, timeout: float = 5.0) -> re.Match:
        """Return the first match of *pattern* in error.log; raise ``AssertionError`` after *timeout*."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.error_log)
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in nginx's error.log:\n{self.error_log}")
            time.sleep(0.02)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def nginx(
    tmp: Path,
    site: str,
    values: Mapping[str, str],
    listens: tuple[str, ...] = ("LISTEN",),
    upstreams: Sequence[Server] = (),
) -> Iterator[Nginx]:
    """Run nginx in the foreground with *site* rendered from *values*, each of *listens* on a free port.

    *upstreams*, the gunicorns *values* point at, only for :meth:`Nginx.log_sections`.

    nginx runs in its own process group, stopped on exit (SIGTERM: open websockets do
    not hold up a fast shutdown). A port taken between :func:`free_port` and nginx's
    bind is retried with another; any other start-up failure raises ``RuntimeError``
    with nginx's error log.
    """
    for attempt in range(3):
        prefix = tmp / f"nginx-{attempt}"
        ports = {name: free_port() for name in listens}
        main = write_config(prefix, site, {**values, **{name: f"127.0.0.1:{p}" for name, p in ports.items()}})
        with open(prefix / "stderr.log", "wb") as stderr:
            process = subprocess.Popen(
                [NGINX, "-p", str(prefix), "-c", str(main), "-g", global_directives()],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            if _wait_listening(process, ports.values()):
                yield Nginx(process, prefix, ports, upstreams)
                return
        finally:
            _stop(process)
        log = _read(prefix / "error.log") + _read(prefix / "stderr.log")
        if "Address already in use" not in log:
            break
    raise RuntimeError(f"nginx did not start:\n{log}")


def _wait_listening(process: subprocess.Popen, ports, timeout: float = 10.0) -> bool:
    """Whether every port accepts connections before *timeout*, and before nginx exits."""
    deadline = time.monotonic() + timeout
    waiting = set(ports)
    while waiting and time.monotonic() < deadline and process.poll() is None:
        for port in list(waiting):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                waiting.discard(port)
            except OSError:
                pass
        if waiting:
            time.sleep(0.02)
    return not waiting and process.poll() is None


def _stop(process: subprocess.Popen) -> None:
    """Stop nginx's process group: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    except ProcessLookupError:
        pass


def settings_module(
    tmp: Path, base: str = "tests.settings", name: str = "proxied_settings", **settings: object
) -> tuple[str, dict[str, str]]:
    """Write a settings module *name*, *base*'s settings plus *settings*, into *tmp*.

    Returns its name and the environment that makes gunicorn find it. Server processes
    cannot use ``override_settings``, and ``tests/settings.py`` is shared by every test.
    """
    lines = [
        f"from {base} import *  # noqa: F403",
        *(f"{setting} = {value!r}" for setting, value in settings.items()),
    ]
    (tmp / f"{name}.py").write_text("\n".join(lines) + "\n")
    path = os.pathsep.join(filter(None, [str(tmp), os.environ.get("PYTHONPATH")]))
    return name, {"PYTHONPATH": path}


#: What a site behind a proxy that sets X-Forwarded-Proto must say (see nginx-tls.conf), and
#: the URLconf with ``/websocket-js/``, a page that loads websocket.js and echoes through it.
BEHIND_PROXY = {
    "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
    "ROOT_URLCONF": "tests.static_urls",
}


def fetch(url: str, headers: Mapping[str, str] | None = None, context: ssl.SSLContext | None = None):
    """GET *url*; return ``(status, headers, body bytes)``, without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    handlers = [NoRedirect(), urllib.request.HTTPSHandler(context=context)]
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(urllib.request.Request(url, headers=dict(headers or {})), timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def get(url: str, headers: Mapping[str, str] | None = None, context: ssl.SSLContext | None = None):
    """:func:`fetch` with the body decoded: ``(status, headers, text)``."""
    status, response_headers, body = fetch(url, headers, context)
    return status, response_headers, body.decode()


@pytest.fixture(scope="session")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``STATIC_ROOT`` filled by ``manage.py collectstatic --noinput``, as at a deploy.

    test_project's own settings with STATIC_ROOT moved to a temporary directory, and
    ManifestStaticFilesStorage, which a production project typically uses: the directory
    holds each file under its own name (websocket.js, what ``{% static %}`` gives under
    the gunicorns' settings) and under a hashed name (websocket.0123456789ab.js).
    """
    tmp = tmp_path_factory.mktemp("collectstatic")
    root = tmp / "static"
    storages = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
    }
    settings, env = settings_module(
        tmp, base="test_project.settings", name="collect_settings", STATIC_ROOT=str(root), STORAGES=storages
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "test_project" / "manage.py"), "collectstatic", "--noinput"],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": settings, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"collectstatic failed:\n{result.stdout}\n{result.stderr}"
    assert (root / "django_websocket" / "websocket.js").is_file(), result.stdout
    return root


def hashed_name(static_root: Path, name: str) -> str:
    """The name ManifestStaticFilesStorage gave *name* (``staticfiles.json``)."""
    return json.loads((static_root / "staticfiles.json").read_text())["paths"][name]


# ----------------------------------------------------------------- the files themselves


def nginx_test(tmp: Path, site: str, values: Mapping[str, str]) -> subprocess.CompletedProcess:
    """``nginx -t`` on *site* rendered from *values*."""
    main = write_config(tmp, site, values)
    return subprocess.run(
        [NGINX, "-t", "-p", str(tmp), "-c", str(main), "-g", global_directives()],
        capture_output=True,
        text=True,
        timeout=30,
    )


def site_values(site: str, certificate: tuple[Path, Path] | None = None) -> dict[str, str]:
    """Values for every placeholder of *site*; upstream addresses that nothing serves."""
    values = {
        "LISTEN": f"127.0.0.1:{free_port()}",
        "REDIRECT_LISTEN": f"127.0.0.1:{free_port()}",
        "UPSTREAM": "127.0.0.1:9",
        "HTTP_UPSTREAM": "127.0.0.1:9",
        "WS_UPSTREAM": "127.0.0.1:9",
        "PROXY_READ_TIMEOUT": "60s",
        "STATIC_ROOT": "/srv/project/staticfiles",
    }
    if certificate is not None:
        values["TLS_CERTIFICATE"], values["TLS_CERTIFICATE_KEY"] = map(str, certificate)
    return values


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with ``openssl``."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.mark.parametrize("site", SITES)
def test_nginx_accepts_the_rendered_file(site, request, tmp_path):
    """``nginx -t`` passes on each deployment file, rendered."""
    certificate = request.getfixturevalue("certificate") if site == "nginx-tls.conf" else None
    result = nginx_test(tmp_path, site, site_values(site, certificate))
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert not PLACEHOLDER.search(_uncommented(tmp_path / "site.conf")), "a placeholder was left unrendered"


def _uncommented(path: Path) -> str:
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


#: A documented render command: ``NAME=value ... envsubst '${NAME} ...' < .../file.conf``.
RENDER_COMMAND = re.compile(r"((?:\b[A-Z][A-Z0-9_]*=\S*[\s\\]+)+)envsubst\s+'([^']*)'[\s\\]*<\s*(\S+)")


def _render_commands() -> Iterator[tuple[str, set[str], set[str], str]]:
    """Each render command in the files' headers and the docs' sh blocks.

    Yields where it was found, the variables it assigns, those it names to envsubst, and
    the file it renders.
    """
    texts = {path.name: re.sub(r"^\s*#", "", path.read_text(), flags=re.M) for path in DEPLOY.glob("*.conf")}
    docs = (ROOT / "docs" / "howto" / "deployment.md").read_text()
    texts["deployment.md"] = "\n".join(re.findall(r"^```sh\n(.*?)^```", docs, re.S | re.M))
    for source, text in texts.items():
        for match in RENDER_COMMAND.finditer(text):
            assigned = set(re.findall(r"\b([A-Z][A-Z0-9_]*)=", match[1]))
            yield source, assigned, set(PLACEHOLDER.findall(match[2])), Path(match[3]).name


def test_render_commands_are_complete():
    """Every documented envsubst command sets and names exactly the placeholders of the file it renders."""
    commands = list(_render_commands())
    assert set(SITES) | {"nginx-main.conf"} <= {target for *_, target in commands}
    for source, assigned, named, target in commands:
        placeholders = set(PLACEHOLDER.findall(_uncommented(DEPLOY / target)))
        assert named == placeholders, f"{source}: envsubst for {target} names {sorted(named)}"
        assert assigned == placeholders, f"{source}: the command for {target} sets {sorted(assigned)}"


#: django-gevent-websocket's published nginx snippet (``alias``'s "..." filled in).
ORIGINAL_SNIPPET = """
server {
    listen 80;
    proxy_set_header Host $host;
    location /static/ { alias /nonexistent/; }
    if ($http_upgrade) { rewrite ^(.*)$ /__ws__/$1 break; }
    location /__ws__/ {
        proxy_pass http://127.0.0.1:8001;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        rewrite ^/__ws__/(.*)$ $1 break;
        return;
    }
    location / { proxy_pass http://127.0.0.1:8000; }
}
"""


def test_the_original_snippet_is_rejected(tmp_path):
    """The original project's snippet fails ``nginx -t`` (its bare ``return;``): why these files exist."""
    (tmp_path / "original.conf").write_text(ORIGINAL_SNIPPET)
    main = tmp_path / "nginx.conf"
    main.write_text(render(DEPLOY / "nginx-main.conf", {"SITE_CONF": "original.conf"}))
    result = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(main), "-g", global_directives()],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert 'invalid number of arguments in "return" directive' in result.stderr


def test_no_bare_return():
    """The original's bare ``return;`` appears in no deployment file and no nginx block of the docs."""
    texts = {path.name: path.read_text() for path in DEPLOY.glob("*.conf")}
    texts["deployment.md"] = "\n".join(_nginx_blocks())
    for name, text in texts.items():
        assert not re.search(r"^\s*return\s*;", text, re.MULTILINE), name


def _nginx_blocks() -> list[str]:
    text = (ROOT / "docs" / "howto" / "deployment.md").read_text()
    return re.findall(r"^```nginx\n(.*?)^```", text, re.S | re.M)


def test_docs_show_the_files_ci_runs():
    """Each nginx block of docs/howto/deployment.md is a deployment file, verbatim; every file is shown."""
    blocks = _nginx_blocks()
    files = {site: (DEPLOY / site).read_text() for site in SITES}
    for block in blocks:
        assert block in files.values(), f"an nginx block of the docs is not a deployment file:\n{block[:300]}"
    for site, text in files.items():
        assert text in blocks, f"docs/howto/deployment.md does not show {site} as it is"


@pytest.mark.skipif(shutil.which("envsubst") is None, reason="envsubst (gettext-base) is not installed")
@pytest.mark.parametrize("site", SITES)
def test_render_is_envsubst(site):
    """:func:`render` gives what the documented ``envsubst '${NAME} ...'`` command gives."""
    values = site_values(site, (Path("/etc/ssl/cert.pem"), Path("/etc/ssl/key.pem")))
    shell_format = " ".join(f"${{{name}}}" for name in values)
    result = subprocess.run(
        ["envsubst", shell_format],
        input=(DEPLOY / site).read_text(),
        env={"PATH": os.environ["PATH"], **values},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert result.stdout == render(DEPLOY / site, values)


# ----------------------------------------------------------------- both layouts, running


@dataclass
class Site:
    """nginx, the gunicorn that serves pages and the one that serves websockets (one and the same, or not)."""

    nginx: Nginx
    pages: Server
    sockets: Server

    def log_sections(self) -> list[tuple[str, str]]:
        return self.nginx.log_sections()


@pytest.fixture(scope="module", params=["nginx-single-upstream.conf", "nginx-two-upstreams.conf"])
def site(request, server_db, static_root, tmp_path_factory) -> Iterator[Site]:
    """A layout running: its gunicorn(s) with ``SECURE_PROXY_SSL_HEADER`` set, nginx in front."""
    tmp = tmp_path_factory.mktemp("site")
    settings, env = settings_module(tmp, **BEHIND_PROXY)
    env["DJANGO_DB_PATH"] = server_db["path"]
    with ExitStack() as stack:
        if request.param == "nginx-single-upstream.conf":
            app = stack.enter_context(gunicorn("test_project.wsgi:application", settings=settings, env=env))
            pages = sockets = app
            values = {"UPSTREAM": f"127.0.0.1:{app.port}"}
        else:
            # Pages on gunicorn's sync worker, which cannot upgrade: a handshake routed
            # there would get 501, never 101.
            pages = stack.enter_context(
                gunicorn("test_project.wsgi:application", worker="sync", settings=settings, env=env)
            )
            sockets = stack.enter_context(gunicorn("test_project.wsgi:websocket", settings=settings, env=env))
            values = {"HTTP_UPSTREAM": f"127.0.0.1:{pages.port}", "WS_UPSTREAM": f"127.0.0.1:{sockets.port}"}
        values["PROXY_READ_TIMEOUT"] = "60s"
        values["STATIC_ROOT"] = str(static_root)
        proxy = stack.enter_context(nginx(tmp, request.param, values, upstreams=(pages, sockets)))
        yield Site(proxy, pages, sockets)


def test_page(site):
    """A page through nginx: 200, served by the pages' gunicorn."""
    status, _, body = get(site.nginx.url("/"))
    assert status == 200, body
    site.pages.wait_for_log(r'"GET / HTTP/1\.1" 200')


def test_echo(site):
    """A websocket through nginx echoes text and binary, served by the websockets' gunicorn."""
    with connect(site.nginx.url("/echo/", "ws"), origin=site.nginx.origin()) as websocket:
        websocket.send("hello through nginx")
        assert websocket.recv(timeout=5) == "hello through nginx"
        websocket.send(b"\x00\xff")
        assert websocket.recv(timeout=5) == b"\x00\xff"
    # The access log line of a websocket is written when it closes.
    site.sockets.wait_for_log(r'"GET /echo/ HTTP/1\.1" 101')


def test_websocket_url_is_nginx_s(site):
    """{% websocket_url %} on a page served through nginx points at nginx's host and port."""
    status, _, body = get(site.nginx.url("/echo/"))
    assert status == 200, body
    assert f'new WebSocket("ws://127.0.0.1:{site.nginx.port}/echo/")' in body


def test_client_cannot_claim_https(site):
    """nginx overwrites a client's X-Forwarded-Proto, so plain HTTP never yields wss:// URLs."""
    status, _, body = get(site.nginx.url("/echo/"), headers={"X-Forwarded-Proto": "https"})
    assert status == 200, body
    assert f'"ws://127.0.0.1:{site.nginx.port}/echo/"' in body


def test_foreign_origin_refused(site):
    """The Origin check works through nginx: another site's page gets 403."""
    with pytest.raises(InvalidStatus) as refused:
        connect(site.nginx.url("/echo/", "ws"), origin="http://evil.example", open_timeout=5)
    assert refused.value.response.status_code == 403


def test_probe(site):
    """websocket_probe.py exits 0 through nginx, 1 with the status for a path that is no socket."""
    ok = subprocess.run(
        [sys.executable, str(PROBE), site.nginx.url("/echo/", "ws")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(
        [sys.executable, str(PROBE), site.nginx.url("/nope/", "ws")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 1
    assert "HTTP 404" in missing.stderr


def assert_not_proxied(site: Site, marker: str) -> None:
    """No request for a static file reached the site's gunicorns: nginx answered them itself.

    A page ``/?MARKER`` is requested after the static files: once the pages' gunicorn
    logged it, its log holds every earlier request it served. (The websockets' gunicorn
    of the two-upstream layout only ever gets handshakes.)
    """
    get(site.nginx.url(f"/?{marker}"))
    site.pages.wait_for_log(rf"GET /\?{marker} HTTP")
    for server in {site.pages, site.sockets}:
        assert "/static/" not in server.log, server.log


def test_static_file_served_by_nginx(site, static_root):
    """websocket.js through nginx: 200, JavaScript, the collected file's bytes, never seen by gunicorn."""
    status, headers, body = fetch(site.nginx.url(SCRIPT))
    assert status == 200
    assert headers["Content-Type"].startswith(JAVASCRIPT_TYPES)
    assert body == (static_root / "django_websocket" / "websocket.js").read_bytes()
    assert b"class DjangoWebSocket" in body
    assert headers["Server"].startswith("nginx")
    # Unhashed: a short max-age (and validators for a 304 after it).
    assert headers["Cache-Control"] == "public, max-age=600"
    assert headers["Last-Modified"] and headers["ETag"]
    assert fetch(site.nginx.url(SCRIPT), headers={"If-None-Match": headers["ETag"]})[0] == 304
    assert_not_proxied(site, "static-checked")


def test_hashed_static_file_is_immutable(site, static_root):
    """ManifestStaticFilesStorage's hashed name: the same bytes, cached for a year, immutable."""
    name = hashed_name(static_root, "django_websocket/websocket.js")
    assert re.fullmatch(r"django_websocket/websocket\.[0-9a-f]{12}\.js", name)
    status, headers, body = fetch(site.nginx.url(f"/static/{name}"))
    assert status == 200
    assert headers["Content-Type"].startswith(JAVASCRIPT_TYPES)
    assert body == (static_root / name).read_bytes()
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_es_module_served_as_javascript(site, static_root):
    """websocket.esm.js, plain and hashed, is JavaScript through nginx's mime.types (a module must be)."""
    plain = "django_websocket/websocket.esm.js"
    for name in (plain, hashed_name(static_root, plain)):
        status, headers, body = fetch(site.nginx.url(f"/static/{name}"))
        assert status == 200
        assert headers["Content-Type"].startswith(JAVASCRIPT_TYPES)
        assert body == (static_root / name).read_bytes()


def test_missing_static_file_is_nginx_s_404(site):
    """A name not in STATIC_ROOT is nginx's 404: it is not passed on to gunicorn."""
    status, headers, _ = fetch(site.nginx.url("/static/django_websocket/missing.js"))
    assert status == 404
    assert "Cache-Control" not in headers
    assert_not_proxied(site, "missing-checked")


def check_page_in_browser(page: Page, proxy: Nginx, scheme: str) -> None:
    """Open ``/websocket-js/`` through *proxy*: the script comes from nginx and its socket echoes."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    with page.expect_response(lambda response: response.url == proxy.url(SCRIPT, scheme)) as script:
        page.goto(proxy.url("/websocket-js/", scheme))
    assert script.value.status == 200
    assert script.value.headers["content-type"].startswith(JAVASCRIPT_TYPES)
    assert script.value.headers["server"].startswith("nginx")
    assert page.evaluate("typeof DjangoWebSocket") == "function"
    expect(page.locator("#status")).to_have_text("open", timeout=TIMEOUT_MS)
    expect(page.locator("#log li")).to_have_text([MESSAGE], timeout=TIMEOUT_MS)
    assert errors == []


@pytest.mark.browser
def test_browser_loads_websocket_js_through_nginx(site, browser):  # noqa: F811
    """Chromium: a page through nginx loads websocket.js from nginx, and its DjangoWebSocket echoes."""
    with browser_page(browser) as page:
        check_page_in_browser(page, site.nginx, "http")
    site.sockets.wait_for_log(r'"GET /echo/ HTTP/1\.1" 101', timeout=10)
    assert_not_proxied(site, "browser-checked")


# ----------------------------------------------------------------- TLS termination
#
# No wss:// through websockets' threaded client (websockets.sync) here: its reader thread
# reads the TLS connection while the caller writes, which OpenSSL does not allow on one
# connection. Right after a TLS 1.3 handshake (nginx's session tickets arriving as the
# handshake request goes out) the request was now and then never sent: "timed out while
# waiting for handshake response", nginx "client closed connection while waiting for
# request", nothing in gunicorn's log. websockets' asyncio client does all of a
# connection's TLS in one thread.


def in_thread(function, *args):
    """``function(*args)`` in a thread of its own: for ``asyncio.run()``, which this one may not call.

    Playwright's sync API (the browser tests, the module's ``browser``) keeps an event loop
    running in the main thread.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(function, *args).result()


@pytest.fixture(scope="module")
def tls_site(server_db, certificate, static_root, tmp_path_factory) -> Iterator[Nginx]:
    """nginx-tls.conf with a self-signed certificate, in front of one gunicorn behind the proxy."""
    tmp = tmp_path_factory.mktemp("tls-site")
    settings, env = settings_module(tmp, **BEHIND_PROXY)
    env["DJANGO_DB_PATH"] = server_db["path"]
    with gunicorn("test_project.wsgi:application", settings=settings, env=env) as app:
        values = {
            "UPSTREAM": f"127.0.0.1:{app.port}",
            "PROXY_READ_TIMEOUT": "60s",
            "TLS_CERTIFICATE": str(certificate[0]),
            "TLS_CERTIFICATE_KEY": str(certificate[1]),
            "STATIC_ROOT": str(static_root),
        }
        with nginx(
            tmp, "nginx-tls.conf", values, listens=("LISTEN", "REDIRECT_LISTEN"), upstreams=[app]
        ) as proxy:
            yield proxy


@pytest.fixture(scope="module")
def trust(certificate) -> ssl.SSLContext:
    """A client context that trusts the self-signed certificate."""
    return ssl.create_default_context(cafile=str(certificate[0]))


def test_tls_page_gives_wss_url(tls_site, trust):
    """Over https, with SECURE_PROXY_SSL_HEADER, {% websocket_url %} gives wss:// and nginx's port."""
    status, _, body = get(tls_site.url("/echo/", "https"), context=trust)
    assert status == 200, body
    assert f'new WebSocket("wss://127.0.0.1:{tls_site.port}/echo/")' in body


def test_tls_echo(tls_site, trust):
    """A wss:// socket, TLS ending at nginx, echoes."""

    async def echo() -> str | bytes:
        url, origin = tls_site.url("/echo/", "wss"), tls_site.origin("https")
        async with connect_async(url, origin=origin, ssl=trust) as websocket:
            await websocket.send("over TLS")
            return await asyncio.wait_for(websocket.recv(), 5)

    assert in_thread(lambda: asyncio.run(echo())) == "over TLS"


def test_tls_probe(tls_site, certificate):
    """websocket_probe.py works over wss:// (the certificate trusted through SSL_CERT_FILE)."""
    result = subprocess.run(
        [sys.executable, str(PROBE), tls_site.url("/echo/", "wss")],
        env={**os.environ, "SSL_CERT_FILE": str(certificate[0])},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


#: What the TLS connections of ``ssl`` sockets and objects are read and written with.
TLS_IO = {
    ssl.SSLSocket: ("do_handshake", "read", "write", "recv", "recv_into", "send", "sendall", "unwrap"),
    ssl.SSLObject: ("do_handshake", "read", "write", "unwrap"),
}


def test_tls_probe_uses_each_connection_from_one_thread(tls_site, certificate, monkeypatch):
    """websocket_probe.py reads and writes each TLS connection from one thread only.

    OpenSSL does not allow two threads in one connection at once; websockets' threaded
    client reads in a thread of its own while the caller writes, and so sometimes lost its
    handshake request (see above): the probe then called a healthy server down.
    """
    threads: dict[int, set[int]] = {}

    def recording(function):
        def method(self, *args, **kwargs):
            threads.setdefault(id(self), set()).add(threading.get_ident())
            return function(self, *args, **kwargs)

        return method

    for cls, names in TLS_IO.items():
        for name in names:
            monkeypatch.setattr(cls, name, recording(getattr(cls, name)))
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    spec = importlib.util.spec_from_file_location("websocket_probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert in_thread(module.probe, tls_site.url("/echo/", "wss")) is None
    assert threads, "no TLS connection was used"
    assert all(len(idents) == 1 for idents in threads.values()), threads


def test_tls_static_file(tls_site, trust, static_root):
    """websocket.js over https, from nginx: 200, JavaScript, the collected bytes."""
    status, headers, body = fetch(tls_site.url(SCRIPT, "https"), context=trust)
    assert status == 200
    assert headers["Content-Type"].startswith(JAVASCRIPT_TYPES)
    assert headers["Server"].startswith("nginx")
    assert body == (static_root / "django_websocket" / "websocket.js").read_bytes()
    name = hashed_name(static_root, "django_websocket/websocket.js")
    status, headers, _ = fetch(tls_site.url(f"/static/{name}", "https"), context=trust)
    assert status == 200
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"


@pytest.mark.browser
def test_tls_browser_loads_websocket_js(tls_site, browser):  # noqa: F811
    """Chromium over https (the self-signed certificate accepted): the script loads, wss:// echoes."""
    with browser_page(browser, ignore_https_errors=True) as page:
        check_page_in_browser(page, tls_site, "https")


def test_plain_http_redirects_to_https(tls_site):
    """The plain-HTTP server answers 301 to https:// (port 443 in production)."""
    port = tls_site.ports["REDIRECT_LISTEN"]
    status, headers, _ = get(f"http://127.0.0.1:{port}/echo/?a=1")
    assert status == 301
    assert headers["Location"] == "https://127.0.0.1/echo/?a=1"


# ----------------------------------------------------------------- idle sockets and pings

#: nginx's proxy_read_timeout in these tests, and how long the socket stays idle (over twice as long).
READ_TIMEOUT = 2.0
IDLE = 5.0


@contextmanager
def idle_site(server_db, static_root: Path, tmp: Path, ping_interval: float | None) -> Iterator[Nginx]:
    """One gunicorn with *ping_interval*, behind nginx-single-upstream.conf with a short read timeout."""
    settings, env = settings_module(tmp, WEBSOCKET_PING_INTERVAL=ping_interval, WEBSOCKET_PING_TIMEOUT=5.0)
    env["DJANGO_DB_PATH"] = server_db["path"]
    with gunicorn("test_project.wsgi:application", settings=settings, env=env) as app:
        # One handshake straight to gunicorn first: the worker's first request loads the
        # URLconfs, which on a busy machine can take longer than the 2 s read timeout.
        with connect(app.ws_url("/echo/"), open_timeout=20):
            pass
        values = {
            "UPSTREAM": f"127.0.0.1:{app.port}",
            "PROXY_READ_TIMEOUT": f"{READ_TIMEOUT:g}s",
            "STATIC_ROOT": str(static_root),
        }
        with nginx(tmp, "nginx-single-upstream.conf", values) as proxy:
            yield proxy


def test_idle_socket_survives_thanks_to_pings(server_db, static_root, tmp_path):
    """Server pings every 0.5 s keep a silent socket open past nginx's 2 s proxy_read_timeout."""
    with idle_site(server_db, static_root, tmp_path, ping_interval=0.5) as proxy:
        # ping_interval=None: the client sends no pings of its own, so only the server's count.
        with connect(proxy.url("/echo/", "ws"), origin=proxy.origin(), ping_interval=None) as websocket:
            with pytest.raises(TimeoutError):
                websocket.recv(timeout=IDLE)  # the echo view sends nothing unprompted
            websocket.send("still here")
            assert websocket.recv(timeout=5) == "still here"
        assert "upstream timed out" not in proxy.error_log


def test_idle_socket_cut_by_nginx_without_pings(server_db, static_root, tmp_path):
    """Control: without pings nginx closes a silent socket after proxy_read_timeout."""
    with idle_site(server_db, static_root, tmp_path, ping_interval=None) as proxy:
        with connect(proxy.url("/echo/", "ws"), origin=proxy.origin(), ping_interval=None) as websocket:
            opened = time.monotonic()
            with pytest.raises(ConnectionClosed):
                websocket.recv(timeout=IDLE)
            assert time.monotonic() - opened >= READ_TIMEOUT - 0.5
        proxy.wait_for_error_log(r"upstream timed out .* while proxying upgraded connection")


# ----------------------------------------------------------------- deploys


def test_reload_closes_sockets_with_1012_through_nginx(server_db, static_root, tmp_path):
    """A deploy (SIGHUP to gunicorn): open sockets get 1012 (service restart) through nginx; new ones
    reach new workers."""
    settings, env = settings_module(tmp_path)
    env["DJANGO_DB_PATH"] = server_db["path"]
    with gunicorn("test_project.wsgi:application", settings=settings, env=env) as app:
        values = {
            "UPSTREAM": f"127.0.0.1:{app.port}",
            "PROXY_READ_TIMEOUT": "60s",
            "STATIC_ROOT": str(static_root),
        }
        with nginx(tmp_path, "nginx-single-upstream.conf", values) as proxy:
            with connect(proxy.url("/echo/", "ws"), origin=proxy.origin()) as websocket:
                websocket.send("before")
                assert websocket.recv(timeout=5) == "before"
                os.kill(app.process.pid, signal.SIGHUP)
                with pytest.raises(ConnectionClosed) as closed:
                    websocket.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            app.wait_for_log(r"(?s)Booting worker.*Booting worker", timeout=20)
            with connect(proxy.url("/echo/", "ws"), origin=proxy.origin()) as websocket:
                websocket.send("after")
                assert websocket.recv(timeout=5) == "after"
