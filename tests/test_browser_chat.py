"""Browser tests of the chat and broadcast demos, and of ``websocket.js`` itself.

One gunicorn worker (our gevent worker, single-port ``test_project.wsgi:application``,
``test_project.settings``, a fresh migrated SQLite file) with the embedded broker, so
every page's socket lives in the same process. Pages run in headless Debian Chromium,
launched as in ``tests/test_browser.py``; each page gets its own browser context
(its own cookies and storage), as two people would. Synchronisation uses Playwright's
waits only. One test runs its own gunicorn with a real Redis, to restart it under the pages.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.pages import page_factory
from tests.redis_server import RedisServer
from tests.servers import ROOT, Server, gunicorn, reload
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, SETTINGS, TIMEOUT_MS, manage

pytestmark = pytest.mark.browser

CLIENT_JS = ROOT / "django_websocket" / "static" / "django_websocket" / "websocket.js"
#: An empty REDIS_URL keeps the embedded broker even if the environment names a Redis.
EMBEDDED_BROKER = {"REDIS_URL": ""}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: the browser tests need Debian's Chromium (`apt-get install chromium`)."
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def _demo(directory: Path, broker: dict[str, str]) -> Iterator[Server]:
    """One gunicorn worker serving the demo (pages and sockets) over a fresh, migrated database.

    The database file is in *directory*; *broker* is the ``REDIS_URL`` environment:
    :data:`EMBEDDED_BROKER`, or a real Redis.
    """
    env = {"DJANGO_DB_PATH": str(directory / "db.sqlite3"), **broker}
    manage(env, "migrate", "--noinput")
    with gunicorn("test_project.wsgi:application", settings=SETTINGS, env=env, workers=1) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The demo with the embedded broker, shared by the module's tests."""
    with _demo(tmp_path_factory.mktemp("browser_chat"), EMBEDDED_BROKER) as server:
        yield server


@pytest.fixture
def new_page(browser: Browser, server: Server) -> Iterator[Callable[[], Page]]:
    """A factory of pages of :func:`server`, each in its own browser context."""
    with page_factory(browser, server) as make:
        yield make


def _open(page: Page, server: Server, path: str) -> None:
    """Load *path* and wait until its socket is open."""
    page.goto(server.url(path))
    expect(page.locator("#status")).to_have_text("open")


def _say(page: Page, handle: str, text: str, color: str | None = None) -> None:
    page.fill("#handle", handle)
    if color is not None:
        page.fill("#color", color)
    page.fill("#message", text)
    page.click("#send")


# The chat demo


def test_two_pages_in_a_room_see_each_others_messages(new_page, server: Server) -> None:
    """Messages typed in one page appear in both, with handle and colour, as text (never HTML)."""
    alice, bob = new_page(), new_page()
    _open(alice, server, "/chat/browsers/")
    _open(bob, server, "/chat/browsers/")

    _say(alice, "alice", "hello from alice", color="#ff0000")
    for page in (alice, bob):
        last = page.locator("#log li.message").last
        expect(last).to_contain_text("alice: hello from alice")
        expect(last.locator(".handle")).to_have_css("color", "rgb(255, 0, 0)")

    _say(bob, "bob", "<b>not bold</b><img src=x onerror=alert(1)>")
    for page in (alice, bob):
        expect(page.locator("#log li.message").last).to_contain_text("bob: <b>not bold</b><img src=x")
        expect(page.locator("#log b, #log img")).to_have_count(0)
    expect(alice.locator("#log li.message")).to_have_count(2)
    expect(alice.locator("#error")).to_have_text("")


def test_history_is_shown_when_a_page_opens(new_page, server: Server) -> None:
    """A page opened later shows the room's stored messages, oldest first, each once."""
    first = new_page()
    _open(first, server, "/chat/history/")
    _say(first, "carol", "first message")
    expect(first.locator("#log li.message")).to_have_count(1)
    _say(first, "carol", "second message")
    expect(first.locator("#log li.message")).to_have_count(2)

    later = new_page()
    _open(later, server, "/chat/history/")
    # Rendered by the server; the socket resumes from the position read before: no duplicates.
    expect(later.locator("#log li.message .text")).to_have_text(["first message", "second message"])


def test_server_rejects_bad_input_and_the_page_shows_why(new_page, server: Server) -> None:
    """A message the server refuses (a blank handle) shows its error; the socket stays open."""
    page = new_page()
    _open(page, server, "/chat/errors/")
    _say(page, "   ", "nobody wrote this")
    expect(page.locator("#error")).to_contain_text("handle")
    expect(page.locator("#status")).to_have_text("open")
    _say(page, "dave", "now it works")
    expect(page.locator("#log li.message")).to_have_count(1)
    expect(page.locator("#error")).to_have_text("")


def test_announcement_appears_in_every_page(new_page, server: Server) -> None:
    """The announcement form posts to an HTTP view (publish()); both pages show it, neither reloads."""
    alice, bob = new_page(), new_page()
    _open(alice, server, "/chat/news/")
    _open(bob, server, "/chat/news/")
    alice.fill("#announcement", "<i>cake</i> in the kitchen")
    alice.click("#announce-send")
    for page in (alice, bob):
        expect(page.locator("#log li.announcement")).to_contain_text("<i>cake</i> in the kitchen")
        expect(page.locator("#log i")).to_have_count(0)
    expect(alice.locator("#announcement")).to_have_value("")
    assert alice.url == server.url("/chat/news/")


#: Before the page's scripts: remember every WebSocket the page opens; while window.refuseSockets
#: is true, connections go to port 9 instead (Chromium refuses it at once; the page retries).
#: window.rewriteSocketUrl, if set, changes the URL of the others.
WATCH_SOCKETS = """
(() => {
  const RealWebSocket = window.WebSocket;
  window.refuseSockets = window.refuseSockets || false;
  window.socketUrls = [];
  window.refused = 0;
  window.WebSocket = class extends RealWebSocket {
    constructor(url, protocols) {
      const rewrite = window.rewriteSocketUrl || ((same) => same);
      super(window.refuseSockets ? "ws://127.0.0.1:9/" : rewrite(url), protocols);
      window.socketUrls.push(url);
      window.refused += window.refuseSockets ? 1 : 0;
      window.lastSocket = this;
    }
  };
})();
"""


def _as(page: Page, handle: str) -> Page:
    """Give *page* the handle *handle*, as a previous visit would have left it in localStorage."""
    page.add_init_script(f"localStorage.setItem('chat.handle', {json.dumps(handle)})")
    return page


def _watch_sockets(page: Page, *, refuse: bool = False) -> list[str]:
    """Install :data:`WATCH_SOCKETS` on *page*; return the list of messages.json URLs it fetches."""
    page.add_init_script(f"window.refuseSockets = {json.dumps(refuse)};" + WATCH_SOCKETS)
    fetched: list[str] = []
    page.on("request", lambda request: "messages.json" in request.url and fetched.append(request.url))
    return fetched


def _bob_and_an_unconnected_page(new_page, server: Server, path: str, first: str) -> tuple[Page, Page, list]:
    """Bob's page of room *path*, where he said *first*; then carol's, loaded, its socket kept down.

    Returns both pages and the list of messages.json URLs carol's page fetches.
    """
    bob = _as(new_page(), "bob")
    _open(bob, server, path)
    _say(bob, "bob", first)
    expect(bob.locator("#log li.message")).to_have_count(1)
    carol = _as(new_page(), "carol")
    fetched = _watch_sockets(carol, refuse=True)
    carol.goto(server.url(path))
    carol.wait_for_function("window.refused >= 1")
    return bob, carol, fetched


def _let_connect(page: Page) -> None:
    """Let a page watched with :func:`_watch_sockets` connect again; wait until its socket is open.

    The page may be waiting a few seconds of backoff after its refused attempts.
    """
    page.evaluate("window.refuseSockets = false")
    expect(page.locator("#status")).to_have_text("open", timeout=20_000)


def _announce(page: Page, text: str) -> None:
    page.fill("#announcement", text)
    page.click("#announce-send")
    expect(page.locator("#announcement")).to_have_value("")


def test_pages_in_a_room_see_who_is_here(new_page, server: Server) -> None:
    """Each page lists the room's members by handle; a second tab counts twice; a closed page leaves."""
    alice, bob = _as(new_page(), "alice"), _as(new_page(), "bob")
    _open(alice, server, "/chat/presence/")
    expect(alice.locator("#presence li")).to_have_text(["alice"])
    _open(bob, server, "/chat/presence/")
    for page in (alice, bob):
        expect(page.locator("#presence li")).to_have_text(["alice", "bob"])

    nameless = new_page()  # no handle: listed under the username, "anonymous" logged out
    _open(nameless, server, "/chat/presence/")
    second_tab = bob.context.new_page()
    second_tab.set_default_timeout(TIMEOUT_MS)
    _open(second_tab, server, "/chat/presence/")
    for page in (alice, bob, second_tab):
        expect(page.locator("#presence li")).to_have_text(["alice", "anonymous", "bob×2"])

    bob.close()
    nameless.close()
    for page in (alice, second_tab):
        expect(page.locator("#presence li")).to_have_text(["alice", "bob"])
    second_tab.fill("#handle", "robert")
    second_tab.press("#handle", "Tab")  # a new handle: the page reconnects under it
    expect(alice.locator("#presence li")).to_have_text(["alice", "robert"])
    expect(second_tab.locator("#status")).to_have_text("open")


def test_messages_sent_while_the_socket_is_down_arrive_once_it_is_back(new_page, server: Server) -> None:
    """A dropped socket resumes from the last id it saw: what it missed arrives once, in order."""
    alice, bob = _as(new_page(), "alice"), _as(new_page(), "bob")
    fetched = _watch_sockets(alice)
    _open(alice, server, "/chat/resume/")
    _open(bob, server, "/chat/resume/")
    _say(bob, "bob", "before the drop")
    expect(alice.locator("#log li.message .text")).to_have_text(["before the drop"])

    alice.evaluate("window.refuseSockets = true; window.lastSocket.close(4000)")  # 4000: not final
    alice.wait_for_function("window.refused >= 1")
    for text in ("missed one", "missed two"):
        _say(bob, "bob", text)
    _announce(bob, "missed announcement")
    expect(bob.locator("#log li")).to_have_count(4)
    expect(alice.locator("#log li")).to_have_count(1)

    _let_connect(alice)
    _say(bob, "bob", "after the return")
    expect(alice.locator("#log li .text")).to_have_text(
        [
            "before the drop",
            "missed one",
            "missed two",
            "Announcement: missed announcement",  # not in the database: only the replay can bring it
            "after the return",
        ]
    )
    resumed = alice.evaluate("window.socketUrls[window.socketUrls.length - 1]")
    assert "since=chat%3Aresume%40" in resumed, resumed
    assert fetched == []  # resumed, not reloaded: no gap


#: For a page watched with :func:`_watch_sockets`: its current socket loses the acks the server
#: sends (the server processed the message; the page never hears so), as when a connection
#: drops between the two.
LOSE_ACKS = """() => {
  const socket = window.lastSocket;
  const handler = socket.onmessage;
  socket.onmessage = (event) => {
    if (!(typeof event.data === "string" && event.data.startsWith('{"ws":"ack"'))) { handler(event); }
  };
}"""


def test_messages_typed_while_offline_are_posted_once_each_in_order_when_back(
    new_page, server: Server
) -> None:
    """Offline (network cut, socket closed, reconnections refused) alice types three messages: they wait
    as pending; back online each appears exactly once on both pages, in order, after the one whose
    ack was lost (resent with its id, stored once)."""
    alice, bob = _as(new_page(), "alice"), _as(new_page(), "bob")
    _watch_sockets(alice)
    _open(alice, server, "/chat/offline/")
    _open(bob, server, "/chat/offline/")
    alice.evaluate(LOSE_ACKS)
    _say(alice, "alice", "zero")
    expect(bob.locator("#log li.message .text")).to_have_text(["zero"])
    expect(alice.locator("#log li.message .text")).to_have_text(["zero"])
    expect(alice.locator("#outbox li.pending .text")).to_have_text(["zero"])  # stored, but no ack came

    alice.context.set_offline(True)
    alice.evaluate(
        "window.refuseSockets = true; window.lastSocket.close(4000)"
    )  # an open socket may outlive offline
    alice.wait_for_function("window.refused >= 1")
    for text in ("one", "two", "three"):
        _say(alice, "alice", text)
    expect(alice.locator("#outbox li.pending .text")).to_have_text(["zero", "one", "two", "three"])
    expect(bob.locator("#log li.message")).to_have_count(1)

    alice.context.set_offline(False)
    _let_connect(alice)
    everything = ["zero", "one", "two", "three"]
    for page in (alice, bob):
        expect(page.locator("#log li.message .text")).to_have_text(everything)
    expect(alice.locator("#outbox li")).to_have_count(0)
    stored = bob.evaluate(
        "fetch('messages.json').then((r) => r.json()).then((r) => r.messages.map((m) => m.message))"
    )
    assert stored == everything
    _say(bob, "bob", "still live")
    for page in (alice, bob):
        expect(page.locator("#log li.message .text")).to_have_text([*everything, "still live"])


def test_messages_posted_before_the_socket_connects_are_not_lost(new_page, server: Server) -> None:
    """The page resumes from the position it was rendered at: nothing between render and connect is lost."""
    bob, carol, fetched = _bob_and_an_unconnected_page(new_page, server, "/chat/late/", "rendered")
    expect(carol.locator("#log li .text")).to_have_text(["rendered"])
    _say(bob, "bob", "after the render")
    _announce(bob, "announced after the render")
    expect(bob.locator("#log li")).to_have_count(3)

    _let_connect(carol)
    expect(carol.locator("#log li .text")).to_have_text(
        ["rendered", "after the render", "Announcement: announced after the render"]
    )
    assert "since=chat%3Alate%40" in carol.evaluate("window.socketUrls[0]")
    assert fetched == []


def test_a_gap_makes_the_page_reload_the_stored_messages(new_page, server: Server) -> None:
    """When its position is not in the history any more, the page refetches messages.json, merging by id."""
    bob, carol, fetched = _bob_and_an_unconnected_page(new_page, server, "/chat/gap/", "kept")
    _say(bob, "bob", "stored while away")
    expect(bob.locator("#log li.message")).to_have_count(2)

    # As if the history had been trimmed past the page's position: the server answers with a gap.
    carol.evaluate(
        "() => { window.rewriteSocketUrl = (url) => url.replace(/(since=chat%3Agap%40)[^&]*/, '$1gone'); }"
    )
    _let_connect(carol)
    expect(carol.locator("#log li.message .text")).to_have_text(["kept", "stored while away"])
    assert fetched == [server.url("/chat/gap/messages.json")]
    _say(bob, "bob", "live again")
    expect(carol.locator("#log li.message .text")).to_have_text(["kept", "stored while away", "live again"])


@pytest.fixture
def redis_demo(tmp_path: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    """The demo on a real Redis, for one test: its server and the ``REDIS_URL`` environment."""
    with RedisServer() as redis_server:
        broker = {"REDIS_URL": redis_server.url}
        with _demo(tmp_path, broker) as server:
            yield server, broker


#: For a page watched with :func:`_watch_sockets`: refuse its next connections, record how its
#: current socket closes, and mark the document (a reload would lose the mark). The backoff's
#: jitter is pinned to 5 % of its cap (at most 1.5 s): however long the page is kept away, it is
#: back soon after it is let in.
KEEP_AWAY = """() => {
  window.sameDocument = true;
  window.refuseSockets = true;
  Math.random = () => 0.05;
  window.closeCodes = [];
  window.lastSocket.addEventListener("close", (event) => window.closeCodes.push(event.code));
}"""


def test_a_server_restart_loses_no_message_and_the_room_still_shows_who_is_here(
    browser: Browser, redis_demo: tuple[Server, dict[str, str]]
) -> None:
    """gunicorn restarted under two pages: both list who is here before and after; the page kept away
    meanwhile gets every message published in between (by the other page, the announcement view and
    another process), once each, from the history: no reload, no messages.json."""
    server, broker = redis_demo
    with page_factory(browser, server) as new_page:
        alice, bob = _as(new_page(), "alice"), _as(new_page(), "bob")
        fetched = {page: _watch_sockets(page) for page in (alice, bob)}
        _open(alice, server, "/chat/restart/")
        _open(bob, server, "/chat/restart/")
        for page in (alice, bob):
            expect(page.locator("#presence li")).to_have_text(["alice", "bob"])
        _say(bob, "bob", "before the restart")
        expect(alice.locator("#log li.message .text")).to_have_text(["before the restart"])

        # Both pages are kept away until the old worker is gone (a page reconnecting within its last
        # second of accepting lands on it); then bob's page comes back, alice's only at the end.
        for page in (alice, bob):
            page.evaluate(KEEP_AWAY)
        old_pid, new_pid = reload(server)
        assert old_pid != new_pid
        for page in (alice, bob):
            page.wait_for_function("window.refused >= 1")
            assert page.evaluate("window.closeCodes") == [1012]  # service restart: closed by the old worker
        _let_connect(bob)
        expect(bob.locator("#presence li")).to_have_text(["bob"])  # alice left with the old worker

        for text in ("missed one", "missed two"):
            _say(bob, "bob", text)
        _announce(bob, "missed announcement")
        announcement = {"type": "announcement", "message": "from another process"}
        manage(broker, "websocket_publish", "chat:restart", json.dumps(announcement), "--json")
        missed = [
            "missed one",
            "missed two",
            "Announcement: missed announcement",
            "Announcement: from another process",
        ]
        expect(bob.locator("#log li .text")).to_have_text(["before the restart", *missed])
        expect(alice.locator("#log li")).to_have_count(1)

        _let_connect(alice)
        for page in (alice, bob):
            expect(page.locator("#presence li")).to_have_text(["alice", "bob"])
        _say(bob, "bob", "after the return")
        everything = ["before the restart", *missed, "after the return"]
        for page in (alice, bob):
            expect(page.locator("#log li .text")).to_have_text(everything)
        assert "since=chat%3Arestart%40" in alice.evaluate("window.socketUrls[window.socketUrls.length - 1]")
        for page in (alice, bob):
            assert page.evaluate("window.sameDocument") is True  # the page was not reloaded
            assert fetched[page] == []  # resumed from the history, not refetched
        assert server.log.count("Booting worker") == 2


def test_chat_index_opens_a_room(new_page, server: Server) -> None:
    """/chat/ opens the named room, which then appears in the list."""
    page = new_page()
    page.goto(server.url("/chat/"))
    # The pattern compiles as the browser compiles it (the v flag), so validation is on.
    assert page.evaluate(
        """() => {
            const input = document.getElementById("id_room");
            new RegExp("^(?:" + input.pattern + ")$", "v");
            input.value = "no spaces";
            const refused = input.validity.patternMismatch;
            input.value = "with-hyphen_1";
            return refused && !input.validity.patternMismatch;
        }"""
    )
    page.fill("#id_room", "from-index")
    page.click("#open-room")
    page.wait_for_url(server.url("/chat/from-index/"))
    expect(page.locator("#status")).to_have_text("open")
    page.goto(server.url("/chat/"))
    expect(page.locator("#rooms")).to_contain_text("from-index")


# The broadcast demo


def test_broadcast_reaches_every_page_including_the_sender(new_page, server: Server) -> None:
    """Text typed on one broadcast page appears on every page of that room, unchanged."""
    alice, bob = new_page(), new_page()
    _open(alice, server, "/broadcast/browsers/")
    _open(bob, server, "/broadcast/browsers/")
    alice.fill("#message", 'héllo {"raw": true} ✓')
    alice.click("#send")
    for page in (alice, bob):
        expect(page.locator("#log li")).to_have_text(['héllo {"raw": true} ✓'])


# websocket.js against a scripted WebSocket: reconnection rules without a server

FAKE_WEBSOCKET = """
() => {
  window.created = [];
  window.delays = [];
  const realSetTimeout = window.setTimeout;
  window.flushTimers = () => new Promise((resolve) => realSetTimeout(resolve, 0));
  // Record each reconnection delay, then reconnect at once.
  window.setTimeout = (callback, delay) => { delays.push(delay); return realSetTimeout(callback, 0); };
  class FakeWebSocket {
    constructor(url) { this.url = url; this.readyState = 0; this.sent = []; created.push(this); }
    send(data) { this.sent.push(data); }
    close(code = 1000, reason = "") {
      this.readyState = 2;
      realSetTimeout(() => this.drop(code, reason), 0);
    }
    open() { this.readyState = 1; this.onopen({}); }
    drop(code, reason = "") { this.readyState = 3; this.onclose({code, reason}); }
    message(data) { this.onmessage({data}); }
  }
  Object.assign(FakeWebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
  window.WebSocket = FakeWebSocket;
  window.connect = (options = {}, url = "ws://127.0.0.1:9/") => {
    const log = {statuses: [], messages: [], metas: [], closes: [], opens: 0, gaps: [], presence: []};
    const client = new DjangoWebSocket(url, Object.assign({
      onstatus: (status) => log.statuses.push(status),
      onmessage: (data, event, meta) => {
        log.messages.push(data instanceof ArrayBuffer ? Array.from(new Uint8Array(data)) : data);
        log.metas.push(meta === undefined ? null : meta);
      },
      onopen: () => { log.opens += 1; },
      onclose: (event, willReconnect) => log.closes.push([event.code, willReconnect]),
      ongap: (channel, id) => log.gaps.push([channel, id]),
      onpresence: (channel, members) => log.presence.push([channel, members]),
    }, options));
    return {client, log};
  };
  // One frame of the resume protocol, as the server writes it.
  window.frame = (ws, channel, fields = {}) => JSON.stringify(Object.assign({ws, channel}, fields));
}
"""


@pytest.fixture
def js(new_page) -> Page:
    """A blank page with websocket.js loaded and window.WebSocket replaced by a scripted fake."""
    page = new_page()
    page.goto("about:blank")
    page.add_script_tag(path=str(CLIENT_JS))
    page.evaluate(FAKE_WEBSOCKET)
    return page


def test_js_backoff_is_full_jitter_under_an_exponential_cap(js: Page) -> None:
    """delay(attempt) lies in [0, min(maxDelay, 500 * 2^attempt))."""
    highest = js.evaluate(
        "[0, 1, 2, 3, 4, 5, 6, 10, 50].map((n) => DjangoWebSocket.delay(n, 30000, () => 0.9999))"
    )
    assert highest == [499, 999, 1999, 3999, 7999, 15998, 29997, 29997, 29997]
    assert js.evaluate("[0, 5, 50].map((n) => DjangoWebSocket.delay(n, 30000, () => 0))") == [0, 0, 0]
    assert js.evaluate("DjangoWebSocket.delay(3, 1000, () => 0.5)") == 500
    samples = js.evaluate("Array.from({length: 200}, () => DjangoWebSocket.delay(2))")
    assert all(0 <= sample < 2000 for sample in samples) and len(set(samples)) > 1


def test_js_reconnects_with_growing_delays_reset_by_an_open(js: Page) -> None:
    """Failed attempts double the cap; a successful open starts again from 500 ms."""
    js.evaluate("Math.random = () => 0.999; window.t = connect()")
    for count in (1, 2, 3):
        js.wait_for_function(f"created.length === {count}")
        js.evaluate("created[created.length - 1].drop(1006)")
    js.wait_for_function("created.length === 4")
    js.evaluate("created[3].open(); created[3].drop(1011)")
    js.wait_for_function("created.length === 5")
    assert js.evaluate("delays") == [499, 999, 1998, 499]
    log = js.evaluate("t.log")
    assert log["statuses"][:4] == ["connecting", "reconnecting in 1s", "connecting", "reconnecting in 1s"]
    assert "reconnecting in 2s" in log["statuses"] and log["statuses"].count("open") == 1
    assert log["closes"] == [[1006, True]] * 3 + [[1011, True]]


@pytest.mark.parametrize("code", [1001, 1006, 1011, 1012, 1013])
def test_js_reconnects_after(js: Page, code: int) -> None:
    """Going away, dropped, server error, restart and slow consumer: the client comes back."""
    js.evaluate(f"Math.random = () => 0.5; window.t = connect(); created[0].open(); created[0].drop({code})")
    js.wait_for_function("created.length === 2")
    js.evaluate("created[1].open()")
    assert js.evaluate("[t.client.status, t.log.opens, t.log.closes]") == ["open", 2, [[code, True]]]
    assert js.evaluate("t.log.statuses")[1:3] == ["open", "reconnecting in 1s"]


def test_js_comes_back_within_250_ms_of_a_service_restart(js: Page) -> None:
    """1012 (a reload; the server spread its closes): jitter below 250 ms, earlier failures forgotten."""
    js.evaluate("Math.random = () => 0.99; window.t = connect(); created[0].drop(1006)")
    js.evaluate("flushTimers(); created[1].drop(1006)")
    js.evaluate("flushTimers(); created[2].drop(1012)")
    assert js.evaluate("delays") == [495, 990, 247]


@pytest.mark.parametrize("code", [1000, 1008, 4403, 4404])
def test_js_does_not_reconnect_after(js: Page, code: int) -> None:
    """A normal end or a policy refusal (1008, PermissionDenied 4403, Http404 4404) is final."""
    js.evaluate(f"window.t = connect(); created[0].open(); created[0].drop({code})")
    js.evaluate("flushTimers()")
    assert js.evaluate("[t.client.status, t.log.closes, delays.length, created.length]") == [
        "closed",
        [[code, False]],
        0,
        1,
    ]


def test_js_close_stops_reconnecting(js: Page) -> None:
    """close() during a pending reconnection cancels it; close() on an open socket ends for good."""
    js.evaluate("window.t = connect(); created[0].drop(1006); t.client.close()")
    js.evaluate("flushTimers()")
    assert js.evaluate("[t.client.status, created.length]") == ["closed", 1]

    js.evaluate("window.u = connect(); created[1].open(); u.client.close()")
    js.evaluate("flushTimers()")
    assert js.evaluate("[u.client.status, u.log.closes, created.length]") == ["closed", [[1000, False]], 2]


def test_js_send_only_while_open_and_json_helpers(js: Page) -> None:
    """send()/sendJSON() return false unless open; json: true parses, falling back to the raw text."""
    js.evaluate("window.t = connect({json: true})")
    assert js.evaluate("[t.client.send('early'), t.client.readyState]") == [False, 0]
    js.evaluate("created[0].open()")
    assert js.evaluate("[t.client.send('text'), t.client.sendJSON({a: [1, 'é']}), t.client.readyState]") == [
        True,
        True,
        1,
    ]
    assert js.evaluate("created[0].sent") == ["text", '{"a":[1,"é"]}']
    js.evaluate("created[0].message('{\"type\": \"message\"}'); created[0].message('not json {')")
    assert js.evaluate("t.log.messages") == [{"type": "message"}, "not json {"]

    js.evaluate("window.raw = connect(); created[1].open(); created[1].message('{\"a\": 1}')")
    assert js.evaluate("raw.log.messages") == ['{"a": 1}']


def test_js_loads_as_a_classic_script_adding_one_global(new_page) -> None:
    """A plain <script> defines the global DjangoWebSocket (with FINAL_CODES) and nothing else."""
    page = new_page()
    page.goto("about:blank")
    before = set(page.evaluate("Object.getOwnPropertyNames(globalThis)"))
    page.add_script_tag(path=str(CLIENT_JS))
    added = set(page.evaluate("Object.getOwnPropertyNames(globalThis)")) - before
    assert added == {"DjangoWebSocket"}
    assert page.evaluate("DjangoWebSocket.FINAL_CODES") == [1000, 1008, 4403, 4404]


# websocket.js and the resume protocol (docs/topics/history.md), against the scripted WebSocket


def test_js_unwraps_channel_messages_and_passes_other_frames_through(js: Page) -> None:
    """Channel messages reach onmessage unwrapped, with {channel, id}; a binary one takes the next frame."""
    js.evaluate(
        """() => {
          window.t = connect({json: true});
          const socket = created[0];
          socket.open();
          socket.message(frame("message", "chat:a", {id: "1-0", data: {type: "message", id: 7}}));
          socket.message(frame("message", "chat:a", {id: "1-1", data: '{"published": "str"}'}));
          socket.message(frame("message", "chat:a", {id: "1-2", data: "plain str"}));
          socket.message('{"type": "error", "error": "from the view"}');
          socket.message(frame("message", "chat:b", {id: "9-0", binary: true}));
          socket.message(new Uint8Array([0, 255]).buffer);
          socket.message(frame("subscribed", "chat:c", {id: "4-2", replayed: 0}));
          socket.message(frame("mystery", "chat:a", {id: "99-0"}));
        }"""
    )
    assert js.evaluate("t.log.messages") == [
        {"type": "message", "id": 7},
        {"published": "str"},  # a published str is what its own text frame would have been
        "plain str",
        {"type": "error", "error": "from the view"},
        [0, 255],
    ]
    assert js.evaluate("t.log.metas") == [
        {"channel": "chat:a", "id": "1-0"},
        {"channel": "chat:a", "id": "1-1"},
        {"channel": "chat:a", "id": "1-2"},
        None,
        {"channel": "chat:b", "id": "9-0"},
    ]
    assert js.evaluate("['chat:a', 'chat:b', 'chat:c', 'chat:d'].map((c) => t.client.lastId(c))") == [
        "1-2",
        "9-0",
        "4-2",
        None,
    ]

    js.evaluate(
        """() => {
          window.raw = connect();
          created[1].open();
          created[1].message(frame("message", "chat:a", {id: "2-0", data: {"ws-like": ["x"]}}));
          created[1].message(frame("message", "chat:a", {id: "2-1", data: '{"a": 1}'}));
        }"""
    )
    assert js.evaluate("raw.log.messages") == ['{"ws-like":["x"]}', '{"a": 1}']  # json off: text


def test_js_resumes_from_its_positions_on_every_connection(js: Page) -> None:
    """since seeds the positions; each (re)connection names them all in the URL, other parameters kept."""
    js.evaluate(
        """() => {
          Math.random = () => 0;
          window.t = connect(
            {since: {"chat:lobby": "5-0", "off": "", "with space": "6-1"}},
            "ws://127.0.0.1:9/chat/lobby/?handle=a%20b&since=chat%3Alobby%401-0&since=other%403-0",
          );
        }"""
    )
    assert js.evaluate("created[0].url") == (
        "ws://127.0.0.1:9/chat/lobby/?handle=a%20b&since=other%403-0"
        "&since=chat%3Alobby%405-0&since=with%20space%406-1"
    )
    js.evaluate(
        """() => {
          created[0].open();
          created[0].message(frame("message", "chat:lobby", {id: "5-1", data: 1}));
          created[0].message(frame("gap", "fresh", {id: "8-0"}));
          created[0].message(frame("subscribed", "fresh", {id: "8-0", replayed: 0}));
          created[0].drop(1006);
        }"""
    )
    js.wait_for_function("created.length === 2")
    assert js.evaluate("created[1].url").endswith(
        "?handle=a%20b&since=other%403-0&since=chat%3Alobby%405-1&since=with%20space%406-1&since=fresh%408-0"
    )
    assert js.evaluate("t.log.gaps") == [["fresh", "8-0"]]

    js.evaluate("window.plain = connect({}, 'ws://127.0.0.1:9/x/?a=1')")
    assert js.evaluate("created[2].url") == "ws://127.0.0.1:9/x/?a=1"  # no position: the URL as given
    js.evaluate("window.bare = connect({since: {c: '1-0'}}, 'ws://127.0.0.1:9/x/')")
    assert js.evaluate("created[3].url") == "ws://127.0.0.1:9/x/?since=c%401-0"


def test_js_presence_aggregates_connections_and_ignores_repeats(js: Page) -> None:
    """presence replaces the list; join/leave per connection, idempotent; rows by user and name, by name."""
    members = js.evaluate(
        """() => {
          window.t = connect();
          const socket = created[0];
          socket.open();
          socket.message(frame("presence", "room", {members: [
            {conn: "h:1:1", user: 2, name: "zoe"},
            {conn: "h:1:2", user: 1, name: "alice", color: "#ff0000"},
            {conn: "h:1:3", user: 1, name: "alice", color: "#00ff00"},
            {conn: "h:1:4", user: null, name: "alice"},
          ]}));
          const zoe = {conn: "h:1:1", user: 2, name: "zoe"};
          socket.message(frame("join", "room", {member: zoe}));       // listed already: ignored
          socket.message(frame("leave", "room", {member: {conn: "h:9:9", user: 5, name: "x"}}));  // unknown
          socket.message(frame("join", "room", {member: {conn: "h:2:1", user: null, name: "bob"}}));
          socket.message(frame("leave", "room", {member: {conn: "h:1:3", user: 1, name: "alice"}}));
          socket.message(frame("leave", "room", {member: {conn: "h:1:3", user: 1, name: "alice"}}));
          socket.message(frame("join", "elsewhere", {member: zoe}));
          return t.log.presence;
        }"""
    )
    assert members == [
        [
            "room",
            [
                {"user": 1, "name": "alice", "color": "#ff0000", "connections": 2},
                {"user": None, "name": "alice", "connections": 1},
                {"user": 2, "name": "zoe", "connections": 1},
            ],
        ],
        [
            "room",
            [
                {"user": 1, "name": "alice", "color": "#ff0000", "connections": 2},
                {"user": None, "name": "alice", "connections": 1},
                {"user": None, "name": "bob", "connections": 1},
                {"user": 2, "name": "zoe", "connections": 1},
            ],
        ],
        [
            "room",
            [
                {"user": 1, "name": "alice", "color": "#ff0000", "connections": 1},
                {"user": None, "name": "alice", "connections": 1},
                {"user": None, "name": "bob", "connections": 1},
                {"user": 2, "name": "zoe", "connections": 1},
            ],
        ],
        ["elsewhere", [{"user": 2, "name": "zoe", "connections": 1}]],
    ]
    assert js.evaluate("t.client.presence('room')") == members[2][1]
    assert js.evaluate("t.client.presence('unknown')") == []
    assert js.evaluate("t.log.messages") == []  # none of it reached onmessage

    js.evaluate(
        """() => {
          const members = [{conn: "h:3:1", user: null, name: "new"}];
          created[0].message(frame("presence", "room", {members}));
        }"""
    )
    assert js.evaluate("t.client.presence('room')") == [{"user": None, "name": "new", "connections": 1}]


def test_js_presence_diff_applies_a_window_of_changes_with_one_callback(js: Page) -> None:
    """presence_diff: leaves then joins, repeats ignored, one onpresence per frame that changes the list."""
    calls = js.evaluate(
        """() => {
          window.t = connect();
          const socket = created[0];
          socket.open();
          const ann = {conn: "h:1:1", user: null, name: "ann"};
          socket.message(frame("presence", "room", {members: [ann]}));
          socket.message(frame("presence_diff", "room", {
            joins: [ann, {conn: "h:1:2", user: null, name: "bo"}, {conn: "h:1:3", user: null, name: "cy"}],
            leaves: [{conn: "h:9:9", user: null, name: "unknown"}],
          }));
          socket.message(frame("presence_diff", "room", {joins: [ann], leaves: []}));  // nothing new
          socket.message(frame("presence_diff", "room", {joins: [], leaves: [ann]}));
          return t.log.presence.map(([channel, rows]) => rows.map((row) => row.name));
        }"""
    )
    assert calls == [["ann"], ["ann", "bo", "cy"], ["bo", "cy"]]
    assert js.evaluate("t.log.messages") == []


def test_js_reconnect_connects_again_at_once(js: Page) -> None:
    """reconnect() closes the socket and opens a new one to the current url; the old one is forgotten."""
    js.evaluate(
        """() => {
          window.t = connect({since: {room: "1-0"}});
          created[0].open();
          t.client.url = "ws://127.0.0.1:9/?handle=new";
          t.client.reconnect();
          created[0].message(frame("message", "room", {id: "2-0", data: "late"}));
        }"""
    )
    js.evaluate("flushTimers()")
    assert js.evaluate("created.map((socket) => [socket.url, socket.readyState])") == [
        ["ws://127.0.0.1:9/?since=room%401-0", 3],
        ["ws://127.0.0.1:9/?handle=new&since=room%401-0", 0],
    ]
    assert js.evaluate("[t.log.closes, t.log.messages, delays]") == [[], [], []]
    js.evaluate("t.client.close(); t.client.reconnect()")
    assert js.evaluate("[created.length, t.client.status]") == [2, "closed"]


# websocket.js's acknowledged messages (django_websocket.acks), against the scripted WebSocket

#: Record how the promise *p* of an acknowledged send settles, under *name*, in window.settled.
SETTLE = """(name) => (p) => p.then(
  () => window.settled.push([name, "acked"]),
  (error) => window.settled.push([name, error.name + ": " + error.message]),
)"""


def _sent_frames(js: Page, socket: int) -> list:
    """What fake socket number *socket* was sent, JSON frames parsed."""
    return js.evaluate(
        f"created[{socket}].sent.map((d) => {{ try {{ return JSON.parse(d); }} catch (e) {{ return d; }} }})"
    )


def test_js_acked_send_resolves_on_ack_and_rejects_on_nack(js: Page) -> None:
    """{ack: true} sends {"ws": "send", "id", "data"}; an ack resolves, a nack rejects; no onmessage."""
    js.evaluate(f"window.settled = []; window.settle = {SETTLE}; window.t = connect({{json: true}})")
    js.evaluate("created[0].open(); settle('a')(t.client.send('text', {ack: true})); null")
    js.evaluate("settle('b')(t.client.sendJSON({b: 1}, {ack: true})); null")
    first, second = _sent_frames(js, 0)
    assert (first["ws"], first["data"], second["ws"], second["data"]) == ("send", "text", "send", '{"b":1}')
    assert first["id"] != second["id"] and js.evaluate("t.client.unacknowledged") == 2
    js.evaluate(
        """async ([a, b]) => {
          created[0].message(JSON.stringify({ws: "ack", id: a}));
          created[0].message(JSON.stringify({ws: "nack", id: b, error: "'color' must look like #rrggbb"}));
          created[0].message(JSON.stringify({ws: "ack", id: a}));  // a late duplicate: ignored
          await flushTimers();
        }""",
        [first["id"], second["id"]],
    )
    assert js.evaluate("settled") == [["a", "acked"], ["b", "Error: 'color' must look like #rrggbb"]]
    assert js.evaluate("[t.client.unacknowledged, t.log.messages]") == [0, []]


def test_js_outbox_waits_while_away_and_is_resent_in_order_before_anything_newer(js: Page) -> None:
    """Unacknowledged messages go out after every (re)connection, in order, before onopen's sends."""
    js.evaluate(
        f"""() => {{
          window.settled = []; window.settle = {SETTLE};
          window.t = connect({{onopen() {{ t.client.send("hello from onopen"); }}}});
          settle("a")(t.client.send("a", {{ack: true}}));
          settle("b")(t.client.send("b", {{ack: true}}));
        }}"""
    )
    assert js.evaluate("created[0].sent") == []  # not open yet: they wait
    js.evaluate("created[0].open()")
    a, b, hello = _sent_frames(js, 0)
    assert [a["data"], b["data"], hello] == ["a", "b", "hello from onopen"]
    js.evaluate("(id) => created[0].message(JSON.stringify({ws: 'ack', id}))", a["id"])
    js.evaluate("created[0].drop(1006); t.client.send('c', {ack: true}); null")  # while away
    js.wait_for_function("created.length === 2")
    js.evaluate("created[1].open(); t.client.send('d', {ack: true}); null")
    assert _sent_frames(js, 1) == [
        b,
        {**b, "data": "c", "id": b["id"][:-1] + "3"},
        "hello from onopen",
        {**b, "data": "d", "id": b["id"][:-1] + "4"},
    ]
    js.evaluate("flushTimers()")
    assert js.evaluate("[settled, t.client.unacknowledged]") == [[["a", "acked"]], 3]


def test_js_close_for_good_rejects_what_is_pending_and_binary_is_refused(js: Page) -> None:
    """close() and a final close code reject pending acked messages (and later ones); binary: TypeError."""
    js.evaluate(
        f"""async () => {{
          window.settled = []; window.settle = {SETTLE};
          window.t = connect(); created[0].open();
          settle("pending")(t.client.send("x", {{ack: true}}));
          settle("binary")(t.client.send(new Uint8Array([1]), {{ack: true}}));
          t.client.close();
          settle("after")(t.client.send("y", {{ack: true}}));
          window.u = connect(); created[1].open();
          settle("forbidden")(u.client.send("z", {{ack: true}}));
          created[1].drop(4403);
          await flushTimers();
        }}"""
    )
    assert sorted(js.evaluate("settled")) == [
        ["after", "Error: closed"],
        ["binary", "TypeError: acknowledged messages are text"],
        ["forbidden", "Error: closed"],
        ["pending", "Error: closed"],
    ]
    assert js.evaluate("[t.client.unacknowledged, u.client.unacknowledged]") == [0, 0]
