"""Benchmark: 'digest bounces' over a Maildir of DSNs, against parsing alone.

The baseline reads every file of the same Maildir and parses it with the email
package (what any bounce processor must at least do); the measured run is
process_mailbox: classify (DSN fields, flufl.bounce, VERP verification against
the journal), record in SQLite, change statuses, and move each message. Both run
in this process, in alternating rounds, on fresh copies of the same messages.

    python benchmarks/bounces.py            # 2,000 messages, 3 rounds
    python benchmarks/bounces.py --quick    # 300 messages, 1 round
"""

from __future__ import annotations

import argparse
import email
import email.policy
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import flufl.bounce  # noqa: E402, F401 - imported before timing, as a long run would have it

from digest import db  # noqa: E402
from digest.bounces import MaildirBox, journal_resolver, process_mailbox  # noqa: E402
from digest.bounces.classify import Identity  # noqa: E402
from digest.tokens import verp_address, verp_token  # noqa: E402

SECRET, LIST_ID, BOUNCE = "bench", "bench.example.org", "bounces@example.org"
FIXTURES = REPO / "tests" / "fixtures" / "bounces"
SHAPES = [
    "postfix-hard.eml",
    "postfix-mailbox-full.eml",
    "exim-hard.eml",
    "gmail-hard.eml",
    "qmail.eml",
    "arf-abuse.eml",
    "vacation-rfc3834.eml",
    "unrelated.eml",
]


def make_maildir(folder: Path, conn, n: int) -> None:
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True)
    texts = [(FIXTURES / name).read_bytes() for name in SHAPES]
    conn.execute("BEGIN")
    for i in range(n):
        address = f"reader{i}@example.net"
        conn.execute(
            "INSERT INTO deliveries (id, issue, email_key, email, fields, state, "
            "updated_at) VALUES (?, 'issue', ?, ?, '{}', 'sent', 0)",
            (i + 1, address, address),
        )
        verp = verp_address(BOUNCE, verp_token(SECRET, LIST_ID, i + 1, "issue", address))
        raw = re.sub(rb"@@VERP:[^@\s]+@[^@\s]+?@@", verp.encode(), texts[i % len(texts)])
        raw = raw.replace(b"Message-I", f"X-N: {i}\nMessage-I".encode(), 1) + f"\n{i}\n".encode()
        (folder / "new" / f"{i}.bench").write_bytes(raw)
    conn.execute("COMMIT")


def baseline(folder: Path) -> None:
    for path in sorted((folder / "new").iterdir()):
        email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)


def measured(folder: Path, conn) -> None:
    identity = Identity(LIST_ID, BOUNCE, journal_resolver(conn, SECRET, LIST_ID))
    process_mailbox(conn, MaildirBox(folder), identity)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (300, 1) if args.quick else (2000, 3)
    ratios = []
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            conn = db.connect(Path(tmp) / "journal.sqlite3")
            make_maildir(Path(tmp) / "box", conn, n)
            shutil.copytree(Path(tmp) / "box", Path(tmp) / "copy")
            start = time.perf_counter()
            baseline(Path(tmp) / "copy")
            base = time.perf_counter() - start
            start = time.perf_counter()
            measured(Path(tmp) / "box", conn)
            took = time.perf_counter() - start
            conn.close()
        ratios.append(took / base)
        print(
            f"round {r + 1}: {n} messages: parse only {n / base:,.0f}/s, digest bounces "
            f"{n / took:,.0f}/s ({took / base:.1f}x the parse-only time)"
        )
    print(f"median: digest bounces takes {statistics.median(ratios):.1f}x the time of parsing alone")


if __name__ == "__main__":
    main()
