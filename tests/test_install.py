"""README.md's install section, followed by the letter on a fresh project.

The wheel is built as ``tests/test_packaging.py`` builds it, then installed with the newest
Django that ``requirements.txt`` pins for this Python into a fresh virtualenv (pip may use
PyPI and its cache). ``django-admin startproject project`` makes a site, and the code blocks
of README.md's "Installing in your project" section are applied to it as a reader would: the
settings lines added to ``settings.py``, the ``wsgi.py`` lines in place of Django's
application, each ``# name.py`` block written next to ``settings.py``. The site is then
served with README.md's single-port gunicorn command (bound to 127.0.0.1, port 0) and
answers an echo over a real websocket. A README whose install section drifts from what
works breaks this test.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from websockets.sync.client import connect

from tests.readme import code_blocks, section
from tests.servers import LISTENING, ROOT, stop_process
from tests.test_packaging import build_distributions

REQUIREMENTS = ROOT / "requirements.txt"
#: The name the README's snippets use for the project package (``project.websocket_urls``...).
PROJECT = "project"
#: Variables of this test run that must not leak into the fresh site's processes.
FOREIGN_ENV = ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "REDIS_URL")


def newest_django_pin() -> str:
    """The highest ``Django==X`` of requirements.txt whose marker holds for this Python."""
    pins = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) != "django":
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pins += [Version(spec.version) for spec in requirement.specifier if spec.operator == "=="]
    assert pins, "requirements.txt pins no Django for this Python"
    return str(max(pins))


def site_env(venv: Path) -> dict[str, str]:
    """This process's environment minus the test suite's settings, with the venv's bin first."""
    env = {name: value for name, value in os.environ.items() if name not in FOREIGN_ENV}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    """Run *args*; return its output, or fail the test with it."""
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{shlex.join(args)} failed ({result.returncode}):\n{output}"
    return output


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the built wheel and the newest pinned Django installed."""
    _, wheel, _ = build_distributions(tmp_path_factory.mktemp("dist"))
    venv = tmp_path_factory.mktemp("install") / "venv"
    env = site_env(venv)
    run([sys.executable, "-m", "venv", str(venv)], env, venv.parent)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--no-input"]
    run([*pip, "install", str(wheel), f"Django=={newest_django_pin()}"], env, venv.parent, timeout=300)
    return venv


# ------------------------------------------------------------ README.md, applied


def add_settings(settings: Path, block: str) -> None:
    """Apply the README's settings block: its INSTALLED_APPS entries appended, other lines added."""
    lines = []
    for statement in ast.parse(block).body:
        targets = getattr(statement, "targets", [])
        if [getattr(target, "id", None) for target in targets] == ["INSTALLED_APPS"]:
            # The block's list is an excerpt ("# ..." stands for the project's own apps).
            apps = ast.literal_eval(statement.value)
            lines.append(f"INSTALLED_APPS += {apps!r}")
        else:
            lines.append(ast.get_source_segment(block, statement))
    settings.write_text(settings.read_text() + "\n" + "\n".join(lines) + "\n")


def replace_application(wsgi: Path, block: str) -> None:
    """Put the README's wsgi.py lines in place of Django's ``get_wsgi_application`` import and call."""
    text = wsgi.read_text()
    for line in (
        "from django.core.wsgi import get_wsgi_application\n",
        "application = get_wsgi_application()\n",
    ):
        assert line in text, f"startproject's wsgi.py has no {line!r}:\n{text}"
        text = text.replace(line, "")
    wsgi.write_text(text + "\n" + block)


def apply_install_section(site: Path) -> None:
    """Follow README.md's install section in *site*, made by ``startproject``."""
    package = site / PROJECT
    blocks = code_blocks(section("Installing in your project"))
    settings = [block for block in blocks if "WEBSOCKET_URLCONF =" in block]
    wsgi = [block for block in blocks if block.startswith("from django_websocket.wsgi import")]
    files = [block for block in blocks if re.match(r"# \w+\.py\n", block)]
    assert len(settings) == len(wsgi) == 1, "README.md's install section lost its settings or wsgi.py block"
    assert {block.split("\n", 1)[0] for block in files} == {"# views.py", "# websocket_urls.py"}
    add_settings(package / "settings.py", settings[0])
    replace_application(package / "wsgi.py", wsgi[0])
    for block in files:
        (package / block.split("\n", 1)[0].removeprefix("# ")).write_text(block)


def gunicorn_command(venv: Path) -> list[str]:
    """README.md's single-port gunicorn command, from the venv, bound to 127.0.0.1 port 0."""
    lines = [
        line.split("#", 1)[0].strip()
        for block in code_blocks(section("Running it"))
        for line in block.splitlines()
        if line.startswith("gunicorn ") and f"{PROJECT}.wsgi:application" in line
    ]
    assert len(lines) == 1, f"README.md's 'Running it' should show one single-port command: {lines}"
    args = shlex.split(lines[0])
    args[0] = str(venv / "bin" / "gunicorn")
    args[args.index("-b") + 1] = "127.0.0.1:0"  # a free port, read back from gunicorn's log
    return args


@pytest.fixture(scope="module")
def site(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``startproject project`` with README.md's install section applied; checked by ``manage.py check``."""
    site = tmp_path_factory.mktemp("site")
    env = site_env(venv)
    run([str(venv / "bin" / "django-admin"), "startproject", PROJECT, str(site)], env, site)
    apply_install_section(site)
    run([str(venv / "bin" / "python"), "manage.py", "check", "--fail-level", "WARNING"], env, site)
    return site


@pytest.fixture
def served(venv: Path, site: Path) -> Iterator[tuple[int, list[bytes]]]:
    """The site under README.md's gunicorn command: yields its port and its log so far."""
    process = subprocess.Popen(
        gunicorn_command(venv),
        cwd=site,
        env=site_env(venv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, stopped whole by stop_process()
    )
    log: list[bytes] = []
    reader = threading.Thread(target=lambda: log.extend(iter(process.stdout.readline, b"")), daemon=True)
    reader.start()
    try:
        yield _wait_booted(process, log), log
    finally:
        stop_process(process)
        reader.join(timeout=5)
        # Shown by pytest only when the test fails.
        print("--- gunicorn ---", b"".join(log).decode("utf-8", "replace"), sep="\n")


def _wait_booted(process: subprocess.Popen, log: list[bytes], timeout: float = 30.0) -> int:
    """The port gunicorn listens on, once its worker has booted; ``AssertionError`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        text = b"".join(log)
        match = LISTENING.search(text)
        if match and b"Booting worker" in text:
            return int(match[1])
        time.sleep(0.05)  # polling the log of a process started above
    raise AssertionError("gunicorn did not boot:\n" + b"".join(log).decode("utf-8", "replace"))


def test_readme_install_section_serves_echo_and_pages_on_one_port(served) -> None:
    port, _ = served
    with connect(f"ws://127.0.0.1:{port}/echo/", open_timeout=10) as socket:
        socket.send("hello from the README")
        assert socket.recv(timeout=10) == "hello from the README"
        socket.send(b"\x00\x01binary")
        assert socket.recv(timeout=10) == b"\x00\x01binary"
    # The same port serves the project's pages (startproject's admin).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, never a proxy
    with opener.open(f"http://127.0.0.1:{port}/admin/login/", timeout=10) as response:
        assert response.status == 200
