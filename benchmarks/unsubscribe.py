"""Benchmark: one-click unsubscribes per second and their latency under 50 concurrent clients.

Run: python benchmarks/unsubscribe.py [--quick]

`digest serve` (waitress, its own process) answers RFC 8058 one-click POSTs from
50 client threads, each request on a new connection as a mail provider makes
it. The baseline is the same requests with nothing else running, measured in
the same run; then the same again while `digest send` (its own process)
delivers to the subscriber store through benchmarks/sink.py (stopped once the
burst is answered). The two alternate over several rounds; medians are printed.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)

from digest import tokens  # noqa: E402

SECRET = "benchmark-secret"
LIST_ID = "world-digest.worlddigest.example.org"
ISSUE = "2021-12-31"
CLIENTS = 50


def make_project(root: Path, subscribers: int, rounds: int) -> Path:
    shutil.copy(REPO / "digest.toml", root / "digest.toml")
    for copy in range(rounds):  # a copy of the example issue per round: independent sends
        shutil.copytree(REPO / "issues" / ISSUE, root / "issues" / f"{ISSUE}-{copy}")
    csv = root / "list.csv"
    csv.write_text(
        "email,name\n" + "".join(f"reader{i:06d}@example.com,Reader {i}\n" for i in range(subscribers))
    )
    done = digest(root, {}, "subscribers", "import", str(csv))
    assert done.returncode == 0, done.stderr
    return root


def digest(root: Path, env: dict, *args: str, **kw):
    return subprocess.run(
        [sys.executable, "-m", "digest", "--project", str(root), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        **kw,
    )


class Process:
    def __init__(self, args: list[str], env: dict, pattern: str) -> None:
        self.proc = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        line = self.proc.stdout.readline()
        match = re.search(pattern, line)
        assert match, line
        self.match = match

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def one_click(port: int, address: str) -> tuple[float, int]:
    token = tokens.sign(SECRET, "unsubscribe", LIST_ID, address)
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        "POST",
        f"/unsubscribe?email={address}&token={token}",
        body=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    return time.perf_counter() - started, response.status


def burst(port: int, addresses: list[str]) -> tuple[float, float, float]:
    """POST every address from CLIENTS threads; return (per second, p50 ms, p99 ms)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(lambda a: one_click(port, a), addresses))
    elapsed = time.perf_counter() - started
    assert {status for _, status in results} == {200}, "an unsubscribe failed"
    latencies = sorted(t for t, _ in results)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(addresses) / elapsed, statistics.median(latencies) * 1000, p99 * 1000


def sent_count(root: Path, issue: str) -> int:
    conn = sqlite3.connect(root / ".digest" / "journal.sqlite3", timeout=30)
    try:
        return conn.execute(
            "SELECT count(*) FROM deliveries WHERE issue = ? AND state = 'sent'", (issue,)
        ).fetchone()[0]
    finally:
        conn.close()


def burst_during_send(
    root: Path, env: dict, issue: str, port: int, addresses: list[str]
) -> tuple[tuple[float, float, float], float]:
    """Start `digest send`, burst once it is sending, stop it; return the burst and the send's rate."""
    send = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "digest",
            "--project",
            str(root),
            "send",
            issue,
            "--yes",
            "--per-connection",
            "1000",
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while sent_count(root, issue) < 200:
        assert send.poll() is None, send.communicate()
        time.sleep(0.02)
    before, t = sent_count(root, issue), time.perf_counter()
    result = burst(port, addresses)
    rate = (sent_count(root, issue) - before) / (time.perf_counter() - t)
    assert send.poll() is None, "the send ended before the burst did: use more subscribers"
    send.terminate()  # Ctrl-C: the send finishes what is in flight and stops
    send.communicate(timeout=120)
    assert send.returncode == 130, send.returncode
    return result, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    args = parser.parse_args()
    rounds, posts = (2, 600) if args.quick else (4, 1_000)
    subscribers = 2 * rounds * posts + 12_000
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
        root = make_project(Path(tmp), subscribers, rounds)
        sink = Process([sys.executable, str(HERE / "sink.py"), str(free_port())], {}, r"ready")
        env = {
            "DIGEST_SECRET": SECRET,
            "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_SECURITY": "none",
            "DIGEST_SMTP_PORT": sink.proc.args[-1],
        }
        web = Process(
            [sys.executable, "-m", "digest", "--project", str(root), "serve", "--port", "0", "--threads", "8"],
            env,
            r"http://127\.0\.0\.1:(\d+)/",
        )
        port = int(web.match.group(1))
        readers = [f"reader{i:06d}@example.com" for i in range(subscribers)]
        chunks = [readers[i * posts : (i + 1) * posts] for i in range(2 * rounds)]
        alone, loaded, send_rates = [], [], []
        try:
            burst(port, readers[-100:])  # warm-up
            for i in range(rounds):  # alternate: nothing else running, then during a send
                alone.append(burst(port, chunks[2 * i]))
                result, rate = burst_during_send(root, env, f"{ISSUE}-{i}", port, chunks[2 * i + 1])
                loaded.append(result)
                send_rates.append(rate)
                print(
                    f"round {i + 1}: alone {alone[-1][0]:,.0f}/s p99 {alone[-1][2]:.0f} ms; "
                    f"during a send {result[0]:,.0f}/s p99 {result[2]:.0f} ms "
                    f"(the send: {rate:,.0f} msg/s)",
                    flush=True,
                )
        finally:
            web.stop()
            sink.stop()

    def median(rows: list, k: int) -> float:
        return statistics.median(r[k] for r in rows)

    print(
        f"one-click unsubscribes, {CLIENTS} concurrent clients, {posts:,} POSTs a run, "
        f"median of {rounds} rounds"
    )
    print(
        f"  nothing else running (baseline): {median(alone, 0):,.0f}/s, "
        f"p50 {median(alone, 1):.0f} ms, p99 {median(alone, 2):.0f} ms"
    )
    print(
        f"  while a send runs:               {median(loaded, 0):,.0f}/s, "
        f"p50 {median(loaded, 1):.0f} ms, p99 {median(loaded, 2):.0f} ms "
        f"(the send meanwhile: {statistics.median(send_rates):,.0f} msg/s)"
    )
    print(
        f"  ratio: {median(loaded, 0) / median(alone, 0):.2f}x throughput, "
        f"p99 {median(loaded, 2) / median(alone, 2):.2f}x"
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
