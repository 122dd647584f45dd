"""The TCP transport's per-peer queue is bounded in bytes as well as in messages (issue 12):
beyond ``max_queue_bytes`` the oldest queued messages are dropped and counted, as for the
message-count bound, and the newest message is always kept."""

from __future__ import annotations

import socket

import pytest

from engine.core.messages import Message, MessageKind
from engine.errors import ConfigError
from engine.transport import tcp
from engine.transport.framing import decode_message
from engine.transport.tcp import TcpTransport
from engine.types import Entry

from .test_tcp import _recv_exact
from .util import WAIT, Collector, free_port


def _append(term: int, size: int) -> Message:
    return Message(kind=MessageKind.APPEND, src="a", dst="b", term=term, index=term - 1,
                   log_term=1, entries=[Entry(term, 1, 0, bytes([term % 256]) * size)])


def _read_frame(conn: socket.socket) -> Message:
    header = _recv_exact(conn, 4)
    return decode_message(header + _recv_exact(conn, int.from_bytes(header, "little")))


def test_queue_bytes_bound_drops_the_oldest_and_keeps_the_newest() -> None:
    """A peer that accepts the connection but stalls the handshake keeps the sender
    CONNECTING, so appends pile up; past max_queue_bytes the oldest go (counted), far below
    the message-count bound, and the survivors are written in order once it accepts."""
    own = f"127.0.0.1:{free_port()}"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        fake_b = f"127.0.0.1:{listener.getsockname()[1]}"
        one = tcp._wire_size(_append(1, 10_000))
        a = TcpTransport("a", {"a": own, "b": fake_b}, secret=None, max_queue=1024,
                         max_queue_bytes=5 * one, handshake_timeout=WAIT)
        a.start(Collector())
        try:
            a.send([_append(1, 10_000)])
            listener.settimeout(WAIT)
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(WAIT)
                a.send([_append(term, 10_000) for term in range(2, 21)])
                assert a.dropped_count() == 20 - 5
                assert a.queued_bytes("b") == 5 * one
                _recv_exact(conn, tcp._HELLO.size + 2)
                conn.sendall(tcp._ACCEPT)
                assert [_read_frame(conn).term for _ in range(5)] == list(range(16, 21))
                assert a.queued_bytes("b") == 0
                # One message larger than the whole budget is still queued (alone) and sent.
                a.send([_append(21, 20 * one), _append(22, 20 * one)])
                assert a.dropped_count() == 16
                assert _read_frame(conn).term == 22
        finally:
            a.close()


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_queue_bytes_must_be_a_positive_int(value: object) -> None:
    with pytest.raises(ConfigError, match="max_queue_bytes"):
        TcpTransport("a", {"a": "127.0.0.1:0"}, max_queue_bytes=value)  # type: ignore[arg-type]
