"""Crash campaign: kill `digest send` at random instants, rerun, count what went wrong.

Each trial starts a fresh send of the example issue to N readers (4 workers) against an
aiosmtpd server on loopback that offers PIPELINING, SIGKILLs it once a random number of
messages has arrived (plus a random fraction of a message's time), runs the same command
again (no --resend-uncertain), and then checks what `digest status` says:

- duplicates: readers who got two copies (must be 0);
- missing: readers who got nothing (each must be reported uncertain);
- uncertain: readers `digest status` reports uncertain, and how many of those had in fact
  been delivered (what --resend-uncertain would send twice).

    python benchmarks/crash_campaign.py --trials 200    # prints the figures for the README

tests/test_send_crash.py runs the same campaign with 20 trials.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLE = "2021-12-31"
DIGEST = [sys.executable, "-m", "digest"]


@dataclass
class Campaign:
    trials: int = 0
    duplicates: int = 0
    missing: int = 0
    uncertain: int = 0
    uncertain_delivered: int = 0
    missing_not_uncertain: int = 0
    killed_at: list[int] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"trials {self.trials}, duplicates {self.duplicates}, missing {self.missing} "
            f"(all reported uncertain: {'yes' if not self.missing_not_uncertain else 'NO'}), "
            f"uncertain {self.uncertain} (of which delivered {self.uncertain_delivered})"
        )


def make_project(folder: Path, readers: int) -> tuple[Path, Path]:
    """A copy of the example project and a list of *readers*; return (project, list)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "digest.toml", folder / "digest.toml")
    shutil.copytree(REPO / "issues", folder / "issues")
    path = folder / "list.csv"
    path.write_text("email,name\n" + "".join(f"reader{i:05d}@example.com,Reader {i}\n" for i in range(readers)))
    return folder, path


def _env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        {
            "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_PORT": str(port),
            "DIGEST_SMTP_SECURITY": "none",
            "DIGEST_SECRET": "crash-campaign-secret",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        }
    )
    return env


def uncertain_of(project: Path, env: dict[str, str]) -> set[str]:
    """The addresses `digest status` reports as uncertain."""
    out = subprocess.run(
        [*DIGEST, "status", EXAMPLE], cwd=project, env=env, capture_output=True, text=True, check=True
    ).stdout
    return {
        line.split()[1].rstrip(":")
        for line in out.splitlines()[1:]
        if line.split() and line.split()[0] == "uncertain"
    }


def run_campaign(
    server,
    project: Path,
    list_path: Path,
    readers: int,
    trials: int,
    rng: random.Random,
    workers: int = 4,
    report=None,
) -> Campaign:
    """Run *trials* kill-and-rerun trials against *server* (a tests.smtpserver.Server)."""
    env = _env(server.port)
    result = Campaign()
    everyone = {f"reader{i:05d}@example.com" for i in range(readers)}
    command = [*DIGEST, "send", EXAMPLE, "--list", str(list_path), "--yes", "--workers", str(workers)]
    for trial in range(trials):
        shutil.rmtree(project / ".digest", ignore_errors=True)
        with server.recorder.lock:
            server.recorder.received.clear()
        target = rng.randrange(0, readers)  # spread over the whole send
        proc = subprocess.Popen(
            command, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while len(server.recorder.received) < target and proc.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the send did not progress")
            time.sleep(0.0005)
        time.sleep(rng.random() * 0.003)  # somewhere within a message's round trip
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        result.killed_at.append(len(server.recorder.received))
        rerun = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=120)
        if rerun.returncode not in (0, 4):
            raise RuntimeError(f"the rerun failed ({rerun.returncode}): {rerun.stderr}")
        uncertain = uncertain_of(project, env)
        copies: dict[str, int] = {}
        with server.recorder.lock:
            for r in server.recorder.received:
                copies[r.recipient.lower()] = copies.get(r.recipient.lower(), 0) + 1
        missing = everyone - set(copies)
        result.trials += 1
        result.duplicates += sum(1 for c in copies.values() if c > 1)
        result.missing += len(missing)
        result.missing_not_uncertain += len(missing - uncertain)
        result.uncertain += len(uncertain)
        result.uncertain_delivered += len(uncertain & set(copies))
        if report:
            report(trial, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.smtpserver import Server

    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(
        f"crash campaign: {args.trials} trials, {args.readers} readers, {args.workers} "
        f"workers, pipelined aiosmtpd, seed {seed}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="digest-crash-") as tmp, Server(pipelining=True) as server:
        project, list_path = make_project(Path(tmp), args.readers)

        def report(trial: int, result: Campaign) -> None:
            if (trial + 1) % 10 == 0:
                print(f"  after {trial + 1}: {result.line()}", flush=True)

        result = run_campaign(
            server, project, list_path, args.readers, args.trials, random.Random(seed), args.workers, report
        )
    print(result.line())
    sys.exit(1 if result.duplicates or result.missing_not_uncertain else 0)


if __name__ == "__main__":
    main()
