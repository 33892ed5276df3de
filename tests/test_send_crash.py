"""Crash campaign: SIGKILL the send at many random instants; a plain rerun never duplicates.

The longer campaign with printed figures: `python benchmarks/crash_campaign.py --trials 200`.
"""

from __future__ import annotations

import random
from pathlib import Path

from benchmarks.crash_campaign import make_project, run_campaign

from .smtpserver import Server

TRIALS = 20
READERS = 120


def test_random_kills_never_duplicate_and_lose_only_the_uncertain(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    project, list_path = make_project(tmp_path / "news", READERS)
    with Server(pipelining=True) as server:
        result = run_campaign(server, project, list_path, READERS, TRIALS, random.Random(seed))
    print(f"seed {seed}: {result.line()}")
    assert result.trials == TRIALS
    assert result.duplicates == 0, f"seed {seed}"
    assert result.missing_not_uncertain == 0, f"seed {seed}"
    # The kills were spread over the send, not all at its start or end.
    assert min(result.killed_at) < READERS // 3 and max(result.killed_at) > READERS // 2
