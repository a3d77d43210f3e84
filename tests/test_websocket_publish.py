"""``manage.py websocket_publish``: end to end against gunicorn (two workers) and Redis, and its errors.

The command runs as a real ``manage.py`` process; the receivers are real websocket
clients of ``notify/`` (``tests/websocket_urls.py``), which says which worker serves
the socket and whose user it is, once its subscription is active.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command
from websockets.sync.client import ClientConnection, connect

from tests.redis_server import free_port
from tests.servers import ROOT, Server

MANAGE = str(ROOT / "test_project" / "manage.py")


def websocket_publish(*args: str, redis_url: str | None, db_path: str) -> subprocess.CompletedProcess:
    """Run ``manage.py websocket_publish ARGS`` with *redis_url* (``None``: no Redis at all)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DJANGO_DB_PATH": db_path}
    env.pop("REDIS_URL", None)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, MANAGE, "websocket_publish", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


class Listener:
    """A websocket client of ``notify/``: ``pid`` of its worker and ``user`` ("" if anonymous)."""

    def __init__(self, server: Server, session: str | None = None) -> None:
        headers = {"Cookie": f"sessionid={session}"} if session else None
        self._connect = connect(server.ws_url("/notify/"), additional_headers=headers, open_timeout=10)

    def __enter__(self) -> Listener:
        self.websocket: ClientConnection = self._connect.__enter__()
        hello = json.loads(self.websocket.recv(timeout=10))
        self.pid, self.user = hello["pid"], hello["user"]
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._connect.__exit__(*exc_info)

    def expect(self, *messages: str | bytes) -> None:
        """Assert that exactly *messages* arrive next, in order."""
        for message in messages:
            assert self.websocket.recv(timeout=5) == message


@pytest.fixture
def listeners(
    fanout_server: Server, server_db: dict[str, str], editors_group: str
) -> Iterator[tuple[Listener, Listener]]:
    """alice's socket (she is in "editors", before she connects) and an anonymous one."""
    with Listener(fanout_server, server_db["session"]) as alice, Listener(fanout_server) as anonymous:
        assert (alice.user, anonymous.user) == ("alice", "")
        yield alice, anonymous


@pytest.fixture
def run(redis_server, server_db: dict[str, str]):
    """``run(*args)``: the command against ``redis_server``; asserts success; returns its stdout."""

    def run(*args: str) -> str:
        result = websocket_publish(*args, redis_url=redis_server.url, db_path=server_db["path"])
        assert result.returncode == 0, result.stderr
        receivers = result.stdout.strip()
        # The number alone on stdout (for scripts); what it means on stderr.
        assert result.stderr.startswith(f"{receivers}: worker process"), result.stderr
        assert "Redis delivered it to (processes, not sockets)" in result.stderr
        return receivers

    return run


# ---------------------------------------------------------------- end to end


def test_text_reaches_everyone_and_prints_worker_count(listeners, run):
    """A plain MESSAGE is a text message to every subscriber; stdout is the number of workers reached."""
    alice, anonymous = listeners
    assert run("notifications", "hello everyone") == str(len({alice.pid, anonymous.pid}))
    alice.expect("hello everyone")
    anonymous.expect("hello everyone")


def test_json_option_sends_parsed_json(listeners, run):
    """--json parses MESSAGE and sends it as JSON text."""
    run("notifications", '{"reload": true,   "ids": [1, 2]}', "--json")
    for listener in listeners:
        assert json.loads(listener.websocket.recv(timeout=5)) == {"reload": True, "ids": [1, 2]}


def test_binary_option_sends_bytes(listeners, run):
    """--binary sends MESSAGE's UTF-8 bytes as a binary message."""
    alice, anonymous = listeners
    run("notifications", "héllo", "--binary")
    alice.expect("héllo".encode())
    anonymous.expect("héllo".encode())


@pytest.mark.parametrize("option", ["--user", "--user=username", "--group", "--session"])
def test_audience_options_reach_alice_only(listeners, run, option, alice_pk, editors_group, server_db):
    """--user PK, --user USERNAME, --group NAME and --session KEY reach alice's socket only."""
    alice, anonymous = listeners
    option, _, variant = option.partition("=")
    values = {"--user": str(alice_pk), "--group": editors_group, "--session": server_db["session"]}
    value = "alice" if variant == "username" else values[option]
    assert run("notifications", f"only for {option}", option, value) == "1"
    run("notifications", "for everyone")
    alice.expect(f"only for {option}", "for everyone")
    anonymous.expect("for everyone")  # Redis keeps publish order: the targeted one would have come first


def test_redis_down_exits_1_with_message(server_db):
    """Redis unreachable: exit status 1, the reason on stderr, nothing on stdout."""
    result = websocket_publish(
        "notifications", "lost", redis_url=f"redis://127.0.0.1:{free_port()}/0", db_path=server_db["path"]
    )
    assert result.returncode == 1
    assert "could not publish to Redis" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_without_redis_prints_zero(server_db):
    """No Redis configured: the in-process broker of the command's own process has no sockets."""
    result = websocket_publish("notifications", "nobody", redis_url=None, db_path=server_db["path"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
    assert result.stderr.startswith("0: sockets of this command's own process"), result.stderr
    assert "No Redis is configured" in result.stderr


def test_nobody_listening_says_so(redis_server, server_db):
    """With Redis and no subscriber: 0, and stderr says nobody is listening; -v 0: the number only."""
    result = websocket_publish("nobody:here", "hello?", redis_url=redis_server.url, db_path=server_db["path"])
    assert (result.returncode, result.stdout.strip()) == (0, "0"), result.stderr
    assert "Nobody is listening" in result.stderr
    quiet = websocket_publish(
        "nobody:here", "hello?", "-v", "0", redis_url=redis_server.url, db_path=server_db["path"]
    )
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "0\n", "")


@pytest.mark.parametrize("user", ["nosuchuser", "987654"])
def test_unknown_user_exits_1_and_publishes_nothing(listeners, redis_server, server_db, user):
    """--user naming nobody (as a username or a primary key): exit 1, a clear message, nothing sent."""
    alice, anonymous = listeners
    result = websocket_publish(
        "notifications", "lost", "--user", user, redis_url=redis_server.url, db_path=server_db["path"]
    )
    assert result.returncode == 1
    assert f"no user '{user}': --user takes a username (User.username) or a primary key" in result.stderr
    assert "nothing was published" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    websocket_publish("notifications", "after", redis_url=redis_server.url, db_path=server_db["path"])
    alice.expect("after")  # not "lost": Redis keeps publish order
    anonymous.expect("after")


# ---------------------------------------------------------------- --user: username or primary key


@pytest.mark.django_db
def test_find_user_rules():
    """Digits: primary key first, then username; anything else: username (then primary key)."""
    from django.contrib.auth import get_user_model

    from django_websocket.management.commands.websocket_publish import find_user

    users = get_user_model().objects
    alice = users.create(username="alice")
    digits = users.create(username=str(alice.pk + 1000))  # a username that looks like a key
    assert find_user("alice") == alice
    assert find_user(str(alice.pk)) == alice  # a primary key
    assert find_user(str(digits.pk)) == digits
    assert find_user(digits.username) == digits  # no such primary key: the username
    named_like_alices_pk = users.create(username=str(alice.pk))
    assert find_user(str(alice.pk)) == alice  # both: the primary key wins
    assert find_user(named_like_alices_pk.username) != named_like_alices_pk
    for unknown in ("bob", "", "99999999", "-1", "1.5"):
        with pytest.raises(CommandError, match=f"no user '{re.escape(unknown)}'"):
            find_user(unknown)


# ---------------------------------------------------------------- argument errors (no Redis needed)


@pytest.mark.parametrize(
    "args, error",
    [
        ((), "the following arguments are required: channel, message"),
        (("notifications",), "the following arguments are required: message"),
        (("notifications", "x", "--json", "--binary"), "not allowed with argument"),
        (("notifications", "x", "--user", "1", "--group", "editors"), "not allowed with argument"),
        (("notifications", "x", "--group", "editors", "--session", "abc"), "not allowed with argument"),
        (("notifications", "{not json", "--json"), "MESSAGE is not valid JSON"),
        (("room@lobby", "x"), "channel names are non-empty strings"),
        (("", "x"), "channel names are non-empty strings"),
    ],
)
def test_argument_errors(args, error):
    """Bad arguments are a CommandError naming the problem, before anything is published."""
    with pytest.raises(CommandError, match=error):
        call_command("websocket_publish", *args)
