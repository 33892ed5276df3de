"""Benchmark: reading a Postfix log for the uncertain messages (--server-log), against
reading the same file line by line and matching one regular expression per line.

The log is synthetic, in the shape of a busy relay's: per message a connect, a client
line, the cleanup line, the qmgr line, a delivery line, removed and a disconnect (the
Message-IDs are random, a few of them the ones asked about). The baseline is what any
log reader must at least do: read every line and try one pattern on it. Both run in
this process, in alternating rounds; peak memory is the reader's own (tracemalloc).

    python benchmarks/serverlog.py            # 200,000 messages (1.4 million lines), 3 rounds
    python benchmarks/serverlog.py --quick    # 20,000 messages, 1 round
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from digest.send.serverlog import read  # noqa: E402


def make_log(path: Path, messages: int) -> dict[str, str]:
    """Write a relay's log of *messages*; return 10 of its Message-IDs with their senders."""
    wanted: dict[str, str] = {}
    with path.open("w") as f:
        for n in range(messages):
            qid, pid = f"{0x4F3B21C0A2 + n:X}", 4000 + n % 50
            stamp = f"Nov 29 {n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d} relay postfix"
            message_id, sender = f"<{n:032x}@worlddigest.example.org>", f"bounces+{n}.x@worlddigest.example.org"
            if n % (messages // 10) == 0:
                wanted[message_id] = sender
            f.write(
                f"{stamp}/smtpd[{pid}]: connect from localhost[127.0.0.1]\n"
                f"{stamp}/smtpd[{pid}]: {qid}: client=localhost[127.0.0.1]\n"
                f"{stamp}/cleanup[77]: {qid}: message-id={message_id}\n"
                f"{stamp}/qmgr[70]: {qid}: from=<{sender}>, size=15213, nrcpt=1 (queue active)\n"
                f"{stamp}/smtp[{pid + 1}]: {qid}: to=<reader{n}@example.com>, relay=mx.example.com[192.0.2.1]"
                ":25, delay=0.2, delays=0.01/0/0.1/0.09, dsn=2.0.0, status=sent (250 2.0.0 OK)\n"
                f"{stamp}/qmgr[70]: {qid}: removed\n"
                f"{stamp}/smtpd[{pid}]: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1\n"
            )
    return wanted


def baseline(path: Path) -> int:
    pattern = re.compile(rb"^\S+ +\d+ \S+ (\S+) ([\w.-]+)/cleanup\[\d+\]: (\w+): message-id=(\S+)")
    found = 0
    with path.open("rb") as f:
        for line in f:
            found += pattern.match(line) is not None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    messages, rounds = (20_000, 1) if args.quick else (200_000, 3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mail.log"
        wanted = make_log(path, messages)
        size = path.stat().st_size
        ours, bare = [], []
        for n in range(rounds):
            for which in ("ours", "bare") if n % 2 == 0 else ("bare", "ours"):
                t = time.perf_counter()
                if which == "ours":
                    found = read([path], wanted)
                    assert len(found.taken) == len(wanted), found
                    ours.append(time.perf_counter() - t)
                else:
                    assert baseline(path) == messages
                    bare.append(time.perf_counter() - t)
        tracemalloc.start()
        read([path], wanted)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    o, b = statistics.median(ours), statistics.median(bare)
    lines = messages * 7
    print(f"log: {messages:,} messages, {lines:,} lines, {size / 1e6:,.0f} MB")
    print(f"digest's reader:        {o:6.2f} s  ({lines / o / 1e6:.2f} M lines/s)")
    print(f"one pattern per line:   {b:6.2f} s  ({lines / b / 1e6:.2f} M lines/s)")
    print(f"ratio: {o / b:.2f}x the baseline's time; peak memory of the reader: {peak / 1e3:,.0f} KB")


if __name__ == "__main__":
    main()
