"""Plain per-process counters of the connection layer, read by :mod:`django_websocket.metrics`.

Why plain integers and not ``prometheus_client`` metrics where things happen: counting a
message must cost the per-message path nothing measurable. An attribute increment on a
module global takes about 70 ns; a ``prometheus_client`` counter in multiprocess mode takes a
lock, checks the pid and writes an mmap'ed file on every ``inc()``: about 1.7 µs, 3.7 µs with
a label (measured on the 2-vCPU development machine), against about 10 µs for a whole small
echo through ``receive()`` and ``send()``. So the connection layer
only adds to the integers here, and the metrics layer pushes the differences into
``prometheus_client`` once a second and before each scrape (:func:`~django_websocket.metrics.sync`).

This module imports nothing of the package (the connection layer and the metrics layer both
import it, without a cycle) and nothing of Django, gevent or ``prometheus_client``.
Everything here is written only from the event loop's thread, without yielding, so no lock.
"""

from __future__ import annotations

from collections.abc import Callable


class Counters:
    """Totals of this process since it started: only ever incremented, never reset.

    - ``messages_received`` / ``messages_sent``: data messages (text or binary) delivered to
      ``receive()`` / written to the client; a channel message written straight by the fan-out
      counts once per socket;
    - ``bytes_received`` / ``bytes_sent``: what was read from / written to the sockets after the
      upgrade: frames with their headers, compressed when compression is on;
    - ``handshakes``: status code → requests answered by ``WebSocketHandler`` (101 for an
      accepted handshake, else the HTTP status it was refused with: 400, 403, 404, 426, 429…);
    - ``closes``: close code → sockets that ended with it (``WebSocket.close_code``: 1000,
      1001, 1006 for a dropped connection, 1008 past the rate limit…), once per socket.

    ``observe_handshake`` is ``None`` or a callable taking an accepted handshake's duration
    in seconds; the metrics layer sets it once it has its histogram (see
    :func:`django_websocket.metrics.setup`).
    """

    __slots__ = (
        "messages_received",
        "messages_sent",
        "bytes_received",
        "bytes_sent",
        "handshakes",
        "closes",
        "observe_handshake",
    )

    def __init__(self) -> None:
        self.messages_received = 0
        self.messages_sent = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.handshakes: dict[int, int] = {}
        self.closes: dict[int, int] = {}
        self.observe_handshake: Callable[[float], None] | None = None

    def count_handshake(self, status: int) -> None:
        """One more request answered by the websocket handler with HTTP *status*."""
        self.handshakes[status] = self.handshakes.get(status, 0) + 1

    def count_close(self, code: int) -> None:
        """One more socket that ended with close *code*."""
        self.closes[code] = self.closes.get(code, 0) + 1


#: This process's counters.
counters = Counters()


def messages_in(frames: bytes) -> int:
    """How many data messages the complete, unmasked server *frames* hold (one per FIN data frame).

    The fan-out writes one batch's joined frames to every subscribed socket: the same ``bytes``
    object each time, so the last answer is remembered by identity and a batch is parsed once,
    not once per recipient.
    """
    if frames is _last_counted[0]:
        return _last_counted[1]
    count = 0
    position = 0
    end = len(frames)
    while position + 2 <= end:
        first, length = frames[position], frames[position + 1] & 0x7F
        position += 2
        if length == 126:
            length = int.from_bytes(frames[position : position + 2], "big")
            position += 2
        elif length == 127:
            length = int.from_bytes(frames[position : position + 8], "big")
            position += 8
        position += length
        # FIN set, and a text, binary or continuation opcode: the end of a data message.
        if first & 0x80 and (first & 0x0F) in (0, 1, 2):
            count += 1
    _last_counted[0], _last_counted[1] = frames, count
    return count


#: The last frames :func:`messages_in` counted, and their count.
_last_counted: list = [None, 0]
