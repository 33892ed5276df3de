"""The benchmark's SMTP sink counts every message exactly, however the stream is cut into reads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

SINK = Path(__file__).resolve().parent.parent / "benchmarks" / "sink.py"
spec = importlib.util.spec_from_file_location("benchmark_sink", SINK)
sink = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sink)


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        pass


def _stuffed(body: bytes) -> bytes:
    """A message body as SMTP DATA: CRLF lines, leading dots doubled, ended by '.'."""
    lines = body.replace(b"\r", b"").split(b"\n") if body else []
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.binary(max_size=80), min_size=1, max_size=6),
    st.lists(st.integers(1, 64), min_size=1, max_size=30),
)
def test_the_sink_accepts_each_message_once_whatever_the_reads(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"EHLO bench\r\n" + b"".join(
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n" + _stuffed(body) for body in bodies
    )
    stream += b"QUIT\r\n"
    sink.Sink.accepted = 0
    protocol, transport = sink.Sink(), Transport()
    protocol.connection_made(transport)
    position, turn = 0, 0
    while position < len(stream):
        chunk = stream[position : position + cuts[turn % len(cuts)]]
        buffer = protocol.get_buffer(-1)
        buffer[: len(chunk)] = chunk
        protocol.buffer_updated(len(chunk))
        position, turn = position + len(chunk), turn + 1
    assert sink.Sink.accepted == len(bodies)
    assert transport.written.count(b"250 2.0.0 accepted\r\n") == len(bodies)
    assert transport.written[-1] == b"221 bye\r\n"
