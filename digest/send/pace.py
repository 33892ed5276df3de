"""The pace of a send across all its connections: --rate, and slower while the server
refuses messages for coming too fast (a rate limit: ``replies.Throttled``)."""

from __future__ import annotations

import time


class Pace:
    """The pace of a send across all connections: at most *rate* messages per second
    (--rate), and slower while the server says it gets mail too fast (``throttled``).

    A refusal for the pace (``replies.Throttled``: Postfix's "450 4.7.1 too much mail",
    SES's "Throttling failure") holds every connection for a pause and then sends at
    three quarters of the pace that got through since the last one, pause included (what a
    fixed window, as Postfix's, or a token bucket, as SES's, lets through). A pause with
    nothing delivered after it doubles, up to MAX_PAUSE (Postfix counts in windows of
    60 s); one after which messages got through is halved for the next time. Every
    SPEED_UP messages delivered without another refusal, the pace goes up an eighth, never
    above --rate. The refusals of messages begun before a pause was decided belong to the
    same burst: they wait for the pause, without deciding another.
    """

    MAX_PAUSE = 60.0
    SPEED_UP = 50
    SLOWER = 0.75  # of the pace that got through
    FASTER = 1.125
    MIN_RATE = 0.1  # messages per second: the slowest the server's refusals make it

    def __init__(self, rate: float | None, first_pause: float = 1.0) -> None:
        now = time.monotonic()
        self.ceiling = rate
        self.interval = 1.0 / rate if rate else 0.0
        self._next = now
        self.first_pause = max(first_pause, 0.05)
        self.pause = 0.0  # the last pause; 0 until the server refuses for the pace
        self.held_until = now  # no message starts before this
        self.pauses = 0  # pauses decided so far (a message notes the number it began in)
        self.since = now  # since then (or the start), this many were delivered:
        self.delivered = 0
        self.refusing_since: float | None = None  # the first refusal since the last delivery

    @property
    def rate(self) -> float | None:
        """Messages per second at most, or None for as fast as the connections go."""
        return 1.0 / self.interval if self.interval else None

    def reserve(self) -> float:
        """Take the next slot; return the seconds to wait for it."""
        if not self.interval:
            if not self.pause:
                return 0.0
            wait = self.held_until - time.monotonic()
            return wait if wait > 0 else 0.0
        now = time.monotonic()
        slot = max(self._next, now, self.held_until)
        self._next = slot + self.interval
        return slot - now

    def delivered_one(self) -> None:
        """A message got through: after SPEED_UP of them since a refusal, go an eighth faster."""
        self.delivered += 1
        self.refusing_since = None
        if self.pause and self.delivered % self.SPEED_UP == 0:
            rate = self.rate
            if rate is not None:
                faster = rate * self.FASTER
                self.interval = 1.0 / min(faster, self.ceiling) if self.ceiling else 1.0 / faster

    def throttled(self, began: int, longest: float = MAX_PAUSE) -> bool:
        """The server refused a message for the pace (*began*: ``pauses`` when the message
        began): hold every connection (see the class), *longest* seconds at most. Return
        whether a new pause was decided."""
        if began < self.pauses:  # part of the burst that decided the last pause
            return False
        now = time.monotonic()
        if self.delivered:
            pace = self.delivered / max(now - self.since, 1e-3) * self.SLOWER
            if self.ceiling:
                pace = min(pace, self.ceiling)
            self.interval = 1.0 / max(pace, self.MIN_RATE)
            self.pause = max(self.first_pause, self.pause / 2)  # near what the server's window needs
        else:
            self.pause = min(self.pause * 2, self.MAX_PAUSE) if self.pause else self.first_pause
        self.held_until = now + min(self.pause, longest)
        self._next = max(self._next, self.held_until)
        self.since = now
        self.pauses += 1
        self.delivered = 0
        return True

    def refusing(self) -> float:
        """Seconds the server has refused messages for the pace, nothing delivered meanwhile
        (0 at its first refusal since a delivery: call it for each refusal)."""
        now = time.monotonic()
        if self.refusing_since is None:
            self.refusing_since = now
        return now - self.refusing_since
