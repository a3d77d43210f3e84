"""The message path inside one process, CPU per delivery: ``python bench/messaging.py [--against DIR]``.

Two figures, each the best of 7 batches, the process pinned to CPU 0:

* hub — a Redis payload handed to the hub (as its reader does) and forwarded to 1,000
  subscriptions whose sockets take every frame at once: µs per delivery;
* local publish — ``publish()`` on the in-process broker to the same 1,000: µs per publish.

No server, no network: it isolates the messaging code from the machine's noise. ``--against DIR``
runs the same measurement on the checkout DIR too (also the layout before
``django_websocket.messaging`` existed), alternating, so a refactor's cost shows as a ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBSCRIBERS = 1000


class FakeSocket:
    """A socket that takes every frame at once (the fast path of forwarding)."""

    on_wait = None

    def send_frames_nowait(self, frames: bytes) -> bool:
        return True


def measure() -> dict[str, float]:
    """Both figures for the checkout this process imports (run from its root)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ.pop("REDIS_URL", None)
    django.setup()
    from django.test.utils import override_settings

    results = {}
    with override_settings(WEBSOCKET_REDIS_URL="redis://127.0.0.1:1/0"):  # never connected
        hub, key, subscriptions = _layout()
        _subscribe(hub, key, subscriptions)
        results["hub µs/delivery"] = _best(lambda: hub.deliver(key, b"t" + b"x" * 32), SUBSCRIBERS)
    with override_settings(WEBSOCKET_REDIS_URL=None, WEBSOCKET_HISTORY_SIZE=0):
        from django_websocket import publish

        hub, key, subscriptions = _layout()
        _subscribe(hub, key, subscriptions)
        results["local publish µs"] = _best(lambda: publish("room", {"text": "hello"}), 1)
    return results


def _layout():
    """``(hub, broker channel of "room", a function making a socket's subscriptions)``, either layout."""
    try:
        from django_websocket.brokers import get_broker, get_hub
        from django_websocket.messaging import subscriptions
    except ImportError:  # before django_websocket.messaging (commit af719df and earlier)
        from django_websocket.hub import get_hub  # type: ignore[no-redef]

        from django_websocket import subscriptions  # type: ignore[no-redef]
        from django_websocket.publishing import channel_key  # type: ignore[attr-defined]

        old_hub = get_hub()
        make_old = lambda: subscriptions.Subscriptions(FakeSocket(), None)  # noqa: E731
        return old_hub, channel_key("room"), (subscriptions, make_old)
    hub = get_hub()
    make = lambda: subscriptions.Subscriptions(FakeSocket(), None, hub)  # noqa: E731
    return hub, get_broker().key("room"), (subscriptions, make)


def _subscribe(hub, key: str, subscriptions) -> None:
    module, make = subscriptions
    for _ in range(SUBSCRIBERS):
        subscription = make()
        subscription.channels["room"] = module._Channel([key], forward=True)  # noqa: SLF001 - no broker round trip
        hub.mailboxes.setdefault(key, set()).add(subscription)


def _best(call, per_call: int, batch: int = 200, batches: int = 7) -> float:
    best = float("inf")
    for _ in range(batches):
        started = time.process_time()
        for _ in range(batch):
            call()
        best = min(best, (time.process_time() - started) / (batch * per_call) * 1e6)
    return best


def run_in(tree: Path) -> dict[str, float]:
    """The figures of checkout *tree*, measured in a process of its own pinned to CPU 0."""
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); sys.path.insert(0, {str(ROOT / 'bench')!r}); "
    code += "import messaging, json; print(json.dumps(messaging.measure()))"
    command = ["taskset", "-c", "0", sys.executable, "-c", code]
    output = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=True).stdout
    import json

    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout to measure in the same run")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    trees = [ROOT] + ([args.against.resolve()] if args.against else [])
    rows: dict[str, dict[str, list[float]]] = {}
    for round_ in range(args.rounds):
        for tree in trees if round_ % 2 == 0 else reversed(trees):
            for name, value in run_in(tree).items():
                rows.setdefault(name, {}).setdefault(str(tree), []).append(value)
    print(f"{'figure':<20}" + "".join(f"{str(tree)[-28:]:>30}" for tree in trees))
    for name, by_tree in rows.items():
        print(f"{name:<20}" + "".join(f"{min(by_tree[str(tree)]):>30.3f}" for tree in trees))
    return 0


if __name__ == "__main__":
    sys.exit(main())
