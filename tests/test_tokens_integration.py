"""Tokens against a real gunicorn (the single-port demo application): a plain client and Chromium.

The tokens are minted by a separate process with the server's settings and database, as a
token view would mint them; the clients carry no session cookie. Proof for issue 13, item 4:
a valid token connects as its user; expired, tampered or missing tokens get the documented
status (401, 401, the session's answer) before any 101.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from django_websocket.tokens import PROTOCOL, PROTOCOL_PREFIX
from tests.pages import browser_page
from tests.servers import ROOT, Server, gunicorn
from tests.test_browser import browser  # noqa: F401  (the Chromium fixture)
from tests.test_integration import KEY, handshake, raw_request, status_line

#: Prints {"valid", "expired", "other"} tokens: alice's for ten minutes, alice's expired, bob's.
MINT = """
import json
import django
django.setup()
from django.contrib.auth import get_user_model
from django_websocket.tokens import websocket_token
User = get_user_model()
alice = User.objects.get(username="alice")
bob, _ = User.objects.get_or_create(username="bob")
print(json.dumps({
    "valid": websocket_token(alice, max_age=600),
    "expired": websocket_token(alice, max_age=-1),
    "other": websocket_token(bob, max_age=600),
}))
"""


@pytest.fixture(scope="module")
def token_server(server_db: dict[str, str]) -> Iterator[Server]:
    """The single-port application (pages, static files, sockets) with the tests' settings."""
    with gunicorn("test_project.wsgi:application", env={"DJANGO_DB_PATH": server_db["path"]}) as server:
        yield server


@pytest.fixture(scope="module")
def minted(server_db: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DJANGO_DB_PATH": server_db["path"]}
    run = {"env": env, "cwd": ROOT, "check": True, "timeout": 60, "capture_output": True, "text": True}
    output = subprocess.run([sys.executable, "-c", MINT], **run)
    return json.loads(output.stdout)


def tampered(token: str) -> str:
    """*token* with one character of its payload changed (the signature no longer matches)."""
    return token[:5] + ("A" if token[5] != "A" else "B") + token[6:]


def offer(token: str) -> str:
    return f"Sec-WebSocket-Protocol: {PROTOCOL}, {PROTOCOL_PREFIX}{token}"


# ---------------------------------------------------------------------------------- a plain client


def test_subprotocol_token_connects_as_its_user(token_server, minted):
    """websockets' client, no cookie: /whoami/ (login_required) answers alice; django-websocket selected."""
    from websockets.sync.client import connect

    url = token_server.ws_url("/whoami/")
    with connect(url, subprotocols=[PROTOCOL, PROTOCOL_PREFIX + minted["valid"]]) as websocket:
        assert websocket.recv(timeout=5) == "alice"
        assert websocket.subprotocol == PROTOCOL
    with connect(url, subprotocols=[PROTOCOL, PROTOCOL_PREFIX + minted["other"]]) as websocket:
        assert websocket.recv(timeout=5) == "bob"
    token_server.wait_for_log(r'"GET /whoami/ HTTP/1.1" 101')
    assert minted["valid"] not in token_server.log  # the header is not logged, nor echoed


def test_query_token_connects_and_lands_in_the_access_log(token_server, minted):
    """?token= works too; the access log then holds the token, as the docs warn."""
    from websockets.sync.client import connect

    with connect(token_server.ws_url(f"/whoami/?token={minted['other']}")) as websocket:
        assert websocket.recv(timeout=5) == "bob"
        assert websocket.subprotocol is None
    token_server.wait_for_log(rf"GET /whoami/\?token={minted['other']}")


@pytest.mark.parametrize("transport", ["subprotocol", "query"])
@pytest.mark.parametrize("kind", ["expired", "tampered", "garbage"])
def test_bad_tokens_get_401_before_any_101(token_server, minted, transport, kind):
    """Expired, tampered or malformed: 401 with WWW-Authenticate and a plain-text reason, never a 101."""
    token = {"expired": minted["expired"], "tampered": tampered(minted["valid"]), "garbage": "x.y"}[kind]
    if transport == "subprotocol":
        request = handshake("/whoami/", f"Sec-WebSocket-Key: {KEY}", offer(token))
    else:
        request = handshake(f"/whoami/?token={token}", f"Sec-WebSocket-Key: {KEY}")
    answer = raw_request(token_server, request)
    assert status_line(answer) == "HTTP/1.1 401 Unauthorized", answer[:300]
    assert b"\r\n\r\n" in answer and b"101" not in answer.split(b"\r\n\r\n")[0]
    assert b'WWW-Authenticate: Bearer error="invalid_token"' in answer
    assert (b"expired" in answer) == (kind == "expired")
    token_server.wait_for_log(rf"websocket token refused \(401\) for /whoami/ \({transport}\)")


def test_missing_token_falls_back_to_the_session(token_server, server_db):
    """No token: login_required redirects (302) as before; alice's session cookie still works."""
    from websockets.sync.client import connect

    answer = raw_request(token_server, handshake("/whoami/", f"Sec-WebSocket-Key: {KEY}"))
    assert status_line(answer).startswith("HTTP/1.1 302")
    with connect(token_server.ws_url("/token-user/")) as websocket:
        assert json.loads(websocket.recv(timeout=5)) == {"user": "", "subprotocol": None}
    cookie = {"Cookie": f"sessionid={server_db['session']}"}
    with connect(token_server.ws_url("/whoami/"), additional_headers=cookie) as websocket:
        assert websocket.recv(timeout=5) == "alice"


# ---------------------------------------------------------------------------------- websocket.js


CONNECT_WITH_TOKEN = """
async ([url, token]) => {
  const calls = [];
  const messages = [];
  return await new Promise((resolve, reject) => {
    setTimeout(() => reject(new Error("timed out: " + JSON.stringify({calls, messages}))), 8000);
    const socket = new DjangoWebSocket(url, {
      // A promise, as from fetch(): called before every connection.
      token: () => { calls.push(Date.now()); return Promise.resolve(token); },
      onmessage(data) {
        messages.push(data);
        if (messages.length === 1) {
          socket.reconnect();  // the second connection asks for a token again
        } else {
          const protocol = socket.socket.protocol;
          socket.close();
          resolve({calls: calls.length, messages, protocol});
        }
      },
    });
  });
}
"""


@pytest.mark.browser
def test_websocket_js_token_option_connects_without_a_session(
    browser: Browser,  # noqa: F811
    token_server: Server,
    minted: dict[str, str],
) -> None:
    """A page with no session cookie: DjangoWebSocket's token option opens /whoami/ as alice, twice."""
    with browser_page(browser, token_server) as page:
        page.goto(token_server.url("/"))
        page.add_script_tag(url="/static/django_websocket/websocket.js")
        result = page.evaluate(CONNECT_WITH_TOKEN, [token_server.ws_url("/whoami/"), minted["valid"]])
        assert result == {"calls": 2, "messages": ["alice", "alice"], "protocol": PROTOCOL}
        assert "sessionid" not in {cookie["name"] for cookie in page.context.cookies()}


RETRY_WITH_A_FRESH_TOKEN = """
async ([url, tokens]) => {
  const closes = [];
  let calls = 0;
  return await new Promise((resolve, reject) => {
    setTimeout(() => reject(new Error("timed out: " + JSON.stringify({calls, closes}))), 8000);
    const socket = new DjangoWebSocket(url, {
      token: () => tokens[Math.min(calls++, tokens.length - 1)],  // a plain string, no promise
      onclose(event, willReconnect) { closes.push([event.code, willReconnect]); },
      onmessage(data) {
        socket.close();
        resolve({calls, closes, data});
      },
    });
  });
}
"""


@pytest.mark.browser
def test_websocket_js_retries_a_refused_token_with_a_fresh_one(
    browser: Browser,  # noqa: F811
    token_server: Server,
    minted: dict[str, str],
) -> None:
    """An expired token: the server answers 401, the page sees 1006 and retries with the next token."""
    with browser_page(browser, token_server) as page:
        page.goto(token_server.url("/"))
        page.add_script_tag(url="/static/django_websocket/websocket.js")
        tokens = [minted["expired"], minted["valid"]]
        result = page.evaluate(RETRY_WITH_A_FRESH_TOKEN, [token_server.ws_url("/whoami/"), tokens])
        assert result == {"calls": 2, "closes": [[1006, True]], "data": "alice"}
    token_server.wait_for_log(r"websocket token refused \(401\) for /whoami/ \(subprotocol\): expired")
