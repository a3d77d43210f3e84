"""Browser tests of the chat and broadcast demos, and of ``websocket.js`` itself.

One gunicorn worker (our gevent worker, single-port ``test_project.wsgi:application``,
``test_project.settings``, a fresh migrated SQLite file) with the embedded broker, so
every page's socket lives in the same process. Pages run in headless Debian Chromium,
launched as in ``tests/test_browser.py``; each page gets its own browser context
(its own cookies and storage), as two people would. Synchronisation uses Playwright's
waits only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.servers import ROOT, Server, gunicorn
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, SETTINGS, TIMEOUT_MS, _manage

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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One gunicorn worker serving the demo (pages and sockets) over a fresh, migrated database."""
    env = {"DJANGO_DB_PATH": str(tmp_path_factory.mktemp("browser_chat") / "db.sqlite3"), **EMBEDDED_BROKER}
    _manage(env, "migrate", "--noinput")
    with gunicorn("test_project.wsgi:application", settings=SETTINGS, env=env, workers=1) as server:
        yield server


@pytest.fixture
def new_page(browser: Browser, server: Server) -> Iterator[Callable[[], Page]]:
    """A factory of pages, each in its own browser context; logs are printed when a test fails."""
    contexts = []
    console: list[str] = []

    def make() -> Page:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        name = f"page {len(contexts)}"
        page.on("console", lambda message: console.append(f"{name} console.{message.type}: {message.text}"))
        page.on("pageerror", lambda error: console.append(f"{name} pageerror: {error}"))
        return page

    try:
        yield make
    finally:
        for context in contexts:
            context.close()
        print("--- browser console ---", *console, "--- server log ---", server.log, sep="\n")


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
    # Rendered by the server, then merged with messages.json on open: no duplicates.
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


def test_chat_index_opens_a_room(new_page, server: Server) -> None:
    """/chat/ opens the named room, which then appears in the list."""
    page = new_page()
    page.goto(server.url("/chat/"))
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
  window.connect = (options = {}) => {
    const log = {statuses: [], messages: [], closes: [], opens: 0};
    const client = new DjangoWebSocket("ws://127.0.0.1:9/", Object.assign({
      onstatus: (status) => log.statuses.push(status),
      onmessage: (data) => log.messages.push(data),
      onopen: () => { log.opens += 1; },
      onclose: (event, willReconnect) => log.closes.push([event.code, willReconnect]),
    }, options));
    return {client, log};
  };
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
