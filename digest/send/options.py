"""What a send may do (Options: connections, pace, retries, which readers are due) and how it
went (Stats)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Options:
    workers: int = 1
    rate: float | None = None  # messages per second, all workers together
    retries: int = 3
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    max_wait: float = 600.0  # seconds a rate-limiting server may go on refusing, nothing delivered
    max_failures_in_a_row: int = 20
    resend_uncertain: bool = False
    retry_failed: bool = False

    @property
    def due_states(self) -> tuple[str, ...]:
        """The journal states a send with these options sends to."""
        return (
            ("pending", "deferred")
            + (("sending",) if self.resend_uncertain else ())
            + (("failed",) if self.retry_failed else ())
        )

    def due(self, counts: dict[str, int], held: int = 0) -> int:
        """How many of a send's deliveries (*counts* by state) a send with these options
        sends to, *held* uncertain ones left out (``serverlog``: not sent again yet)."""
        states = self.due_states
        return sum(counts[state] for state in states) - (held if "sending" in states else 0)


@dataclass
class Stats:
    """Counts of this run."""

    total: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    uncertain: int = 0
    suppressed: int = 0
    slowed: int = 0  # pauses the server's rate limit made the send take
    throttled: int = 0  # messages it refused for the pace
    pace: float | None = None  # messages per second at most as the send ended, once it slowed
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.deferred + self.uncertain + self.suppressed

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0
