"""Where a send's time goes: digest's send to the benchmark sink with parts of the
per-message work switched off, one at a time, against the raw client in the same run.

    python benchmarks/send_breakdown.py [--count 5000] [--rounds 3]

A diagnostic, not a measure of the product: a variant without the journal's writes
or without personalisation is not a send digest would ever do. It shows what each
part costs per message (CPU and throughput), to say where to work next. A bare
callback client (asyncio.Protocol, pipelined, nothing else) shows the floor for
an asyncio client; a send whose messenger accepts every message at once, with no
server, shows digest's own work alone (its msg/s is not comparable to the others').
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import run  # benchmarks/run.py: the scratch project, the sink, the raw client

from digest.message import MessageTemplate
from digest.send import Plan
from digest.send.journal import Journal


@contextlib.contextmanager
def without(part: str) -> Iterator[None]:
    """Switch one part of the per-message work off (the rest runs as in a real send)."""
    if part == "journal writes":  # 'sending' and 'sent' still computed, never committed
        with mock.patch.object(Journal, "record", lambda self, entries, claims=None, message_ids=None: set()):
            yield
    elif part == "personalisation":  # one prepared message for everyone, never joined again
        made: dict[bool, list[bytes]] = {}
        joined: dict[int, bytes] = {}
        real, real_assemble = MessageTemplate.pieces, MessageTemplate.assemble

        def once(self, recipient=None, *, to=None, wire=False):
            if wire not in made:
                made[wire] = real(self, recipient, to=to, wire=wire)
            return made[wire]

        def assemble(self, pieces):
            if id(pieces) not in joined:
                joined[id(pieces)] = real_assemble(self, pieces)
            return joined[id(pieces)]

        with (
            mock.patch.object(MessageTemplate, "pieces", once),
            mock.patch.object(MessageTemplate, "assemble", assemble),
        ):
            yield
    elif part == "VERP":  # the From address as envelope sender
        sender = "digest@worlddigest.example.org"
        with mock.patch.object(Plan, "envelope_sender", lambda self, r, i=None: sender):
            yield
    elif part == "network":  # a messenger that accepts every message at once: digest's own work
        real_run = Plan.run

        def run_without_network(self, *args, **kwargs):
            self.messenger_factory = _Accepting
            return real_run(self, *args, **kwargs)

        with mock.patch.object(Plan, "run", run_without_network):
            yield
    else:
        yield


class _Accepting:
    """A messenger with no server: every message is accepted on the next turn of the loop."""

    wire = True
    in_flight = False

    def ready(self, callback) -> None:
        callback(None)

    def check_envelope(self, sender: str, recipient: str) -> None:
        pass

    def transmit(self, sender: str, recipient: str, data: bytes, done) -> None:
        asyncio.get_running_loop().call_soon(done, "250 2.0.0 accepted")

    async def close(self) -> None:
        pass


class _Replies(asyncio.Protocol):
    """A client protocol that hands each complete SMTP reply line to ``_reply``."""

    buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\r\n")
        for line in lines:
            if line[3:4] != b"-":  # the last line of a multi-line reply
                self._reply(line)

    def _reply(self, line: bytes) -> None:
        raise NotImplementedError


class _Bare(_Replies):
    """The floor for an asyncio client: callbacks, pipelined, no journal, no checks."""

    def __init__(self, data: bytes, count: int, done: asyncio.Future[None]) -> None:
        self.data, self.count, self.done = data, count, done
        self.buffer, self.state, self.sent, self.waiting = b"", "greeting", 0, 0

    def _envelope(self) -> None:
        self.transport.write(
            b"MAIL FROM:<digest@worlddigest.example.org>\r\nRCPT TO:<r%d@example.com>\r\nDATA\r\n" % self.sent
        )
        self.state, self.waiting = "envelope", 3

    def _reply(self, line: bytes) -> None:
        if self.state == "greeting":
            self.transport.write(b"EHLO bench\r\n")
            self.state = "ehlo"
        elif self.state == "ehlo":
            self._envelope()
        elif self.state == "envelope":
            self.waiting -= 1
            if not self.waiting:
                self.transport.write(self.data)
                self.state = "dot"
        elif self.state == "dot":
            self.sent += 1
            if self.sent < self.count:
                self._envelope()
            else:
                self.transport.write(b"QUIT\r\n")
                self.state = "quit"
        else:
            self.transport.close()
            self.done.set_result(None)


def bare_send(port: int, data: bytes, count: int, workers: int) -> tuple[float, float]:
    """Send with *workers* bare Protocol clients; return (msg/s, CPU seconds a message)."""

    async def send() -> None:
        loop = asyncio.get_running_loop()
        done = [loop.create_future() for _ in range(workers)]
        for future in done:
            await loop.create_connection(lambda f=future: _Bare(data, count // workers, f), "127.0.0.1", port)
        await asyncio.gather(*done)

    cpu, t = run._cpu(), time.perf_counter()
    asyncio.run(send())
    sent = count // workers * workers
    return sent / (time.perf_counter() - t), (run._cpu() - cpu) / sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="digest-breakdown-"))
    project = run.load_project(run.make_project(root / "bytes", 50))
    template = MessageTemplate(
        run.render_issue(project, run.load_issue(project, "bench"), personal=True), secret="benchmark-secret"
    )
    data = template.personalise(run.Recipient("reader@example.com", {"name": "Reader"}), wire=True)
    variants = ["", "VERP", "personalisation", "journal writes", "all three", "network"]
    others = ["bare", "raw"]
    rates: dict[str, list[float]] = {v: [] for v in [*variants, *others]}
    cpu: dict[str, list[float]] = {v: [] for v in [*variants, *others]}
    sink = run.Sink()
    try:
        run.digest_send(root, sink.port, 500, 4, "warmup")
        for n in range(args.rounds):
            for variant in variants:
                with contextlib.ExitStack() as stack:
                    parts = variants[1:4] if variant == "all three" else [variant]
                    for part in parts:
                        stack.enter_context(without(part))
                    rates[variant].append(run.digest_send(root, sink.port, args.count, 4, f"{n}{variant}"))
                cpu[variant].append(run.CPU["digest"][-1])
            rates["raw"].append(run.raw_send(sink.port, data, "digest@worlddigest.example.org", args.count, 4))
            cpu["raw"].append(run.CPU["raw"][-1])
            rate, seconds = bare_send(sink.port, data, args.count, 4)
            rates["bare"].append(rate)
            cpu["bare"].append(seconds)
    finally:
        sink.stop()
    raw = statistics.median(rates["raw"])
    print(f"\n{'digest send to the sink':<44} {'msg/s':>8} {'vs raw':>7} {'CPU/msg':>9}")
    names = {
        "": "as it is",
        "network": "without the network (accepted at once)",
        "bare": "a bare asyncio.Protocol client",
        "raw": "raw client (4 threads)",
    }
    for variant in [*variants, *others]:
        name = names.get(variant, f"without {variant}")
        rate = statistics.median(rates[variant])
        print(f"{name:<44} {rate:>8,.0f} {rate / raw:>6.2f}x {statistics.median(cpu[variant]) * 1e6:>7,.0f}us")


if __name__ == "__main__":
    main()
