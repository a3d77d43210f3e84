"""Chromium pages for the browser tests, each in a browser context of its own (its own cookies).

What a page logs (``console.*`` and uncaught errors) is printed when its context closes, with
the server's log when one is given: pytest shows it only for a failing test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page

from tests.servers import Server

#: How long a page waits for a selector, a navigation or an expression (milliseconds).
TIMEOUT_MS = 10_000


@contextmanager
def page_factory(
    browser: Browser, server: Server | None = None, **context_options
) -> Iterator[Callable[[], Page]]:
    """Yield ``make()``, which opens a new page in a new context; every context is closed on exit."""
    contexts = []
    console: list[str] = []

    def make() -> Page:
        context = browser.new_context(**context_options)
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
        log = ["--- server log ---", server.log] if server is not None else []
        print("--- browser console ---", *console, *log, sep="\n")


@contextmanager
def browser_page(browser: Browser, server: Server | None = None, **context_options) -> Iterator[Page]:
    """One page in a new context (see :func:`page_factory`)."""
    with page_factory(browser, server, **context_options) as make:
        yield make()
