"""Where a send's time goes: digest's send to the benchmark sink with parts of the
per-message work switched off, one at a time, against the raw client in the same run.

    python benchmarks/send_breakdown.py [--count 5000] [--rounds 3]

A diagnostic, not a measure of the product: a variant without the journal's writes
or without personalisation is not a send digest would ever do. It shows what each
part costs per message (CPU and throughput), to say where to work next.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
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
        with mock.patch.object(Journal, "record", lambda self, entries, claims=None: set()):
            yield
    elif part == "personalisation":  # one prepared message for everyone
        made: dict[bool, bytes] = {}
        real = MessageTemplate.personalise

        def once(self, recipient=None, *, to=None, wire=False):
            if wire not in made:
                made[wire] = real(self, recipient, to=to, wire=wire)
            return made[wire]

        with mock.patch.object(MessageTemplate, "personalise", once):
            yield
    elif part == "VERP":  # the From address as envelope sender
        sender = "digest@worlddigest.example.org"
        with mock.patch.object(Plan, "envelope_sender", lambda self, r, i=None: sender):
            yield
    else:
        yield


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
    variants = ["", "VERP", "personalisation", "journal writes", "all three"]
    rates: dict[str, list[float]] = {v: [] for v in [*variants, "raw"]}
    cpu: dict[str, list[float]] = {v: [] for v in [*variants, "raw"]}
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
    finally:
        sink.stop()
    raw = statistics.median(rates["raw"])
    print(f"\n{'digest send to the sink':<44} {'msg/s':>8} {'vs raw':>7} {'CPU/msg':>9}")
    for variant in [*variants, "raw"]:
        name = "raw client" if variant == "raw" else (f"without {variant}" if variant else "as it is")
        rate = statistics.median(rates[variant])
        print(f"{name:<44} {rate:>8,.0f} {rate / raw:>6.2f}x {statistics.median(cpu[variant]) * 1e6:>7,.0f}us")


if __name__ == "__main__":
    main()
