"""What a mail server's log says of uncertain messages: which of them it took.

A message is uncertain when its final ``.`` went out but no reply came back (RFC 1047):
the server may have queued it. Postfix logs, for each message it receives, the queue
ID it gave it (``smtpd``, at the first accepted recipient), the message's Message-ID
(``cleanup``); once the message is safely in its queue, the queue ID again with its
envelope (``qmgr``); and, for a client that went away before the end of its message,
that the session was lost in DATA::

    ... relay postfix/smtpd[4240]: connect from localhost[127.0.0.1]
    ... relay postfix/smtpd[4240]: 4XyZ1b2QdKz9: client=localhost[127.0.0.1]
    ... relay postfix/cleanup[4242]: 4XyZ1b2QdKz9: message-id=<3074f8…@worlddigest.example.org>
    ... relay postfix/qmgr[311]: 4XyZ1b2QdKz9: from=<bounces+…@…>, size=15213, nrcpt=1 (queue active)
    ... relay postfix/smtpd[4240]: lost connection after DATA (96256 bytes) from localhost[127.0.0.1]

Each uncertain message is, by the logs (``ServerLog``):

- *taken*: its ``cleanup`` line, then the ``qmgr`` line of its queue ID with the envelope
  sender digest used for that reader and one recipient; or cleanup's own ``hold`` or
  ``discard`` of it (Postfix answered 250 and keeps or drops it by its rules). The sender
  check keeps another message that names the same Message-ID (anybody can write one),
  or one that got the same queue ID later (Postfix's short IDs come back), from passing
  for it.
- *thrown away*: its ``cleanup`` line, and the session that sent it lost (or timed out)
  in DATA while this message was its last (no refused recipient after it), or cleanup's
  ``reject`` of it; and no ``qmgr`` line of its queue ID at all.
- *held back*: its ``cleanup`` line, and nothing that tells: Postfix's queue manager may
  log it queued later (it falls behind when its queue is full); or a ``qmgr`` line with
  another envelope (a rewritten sender, an ``always_bcc``) that may or may not be it.
- *not received*: no line of it at all, where the logs cover the time the message was
  claimed (``covers``); held back where they do not.

A queue ID counts on one host and one Postfix instance (its ``syslog_name``; a service
of master.cf, ``postfix/submission/smtpd``, is the instance's). Postfix's processes log
apart: a lost session may come before the ``cleanup`` line of its message. The files are
read oldest first (by modification time) as one stream, so a message whose lines a
rotation split is found; compressed ones are known by their content; a pipe works
(``<(journalctl …)``). The time stamps of syslog (``Nov 29 14:55:01``, ``.123456``
too), of RFC 3339 and of Postfix's own ``maillog_file`` are read.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from io import BufferedReader
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigError, DigestError, raise_all

MAX_LINE = 64 << 10  # longer lines are skipped whole (no Postfix line is near it)
# The logs cover a message's time if one file, or files that follow each other with no gap
# of over GAP seconds, run from BEFORE seconds before the time it was last recorded (its
# claim; the caller gives more where it was recorded later, with why it is uncertain) to
# AFTER after; and only if the logs' clock agrees with this machine's within SKEW seconds
# (the send's own messages tell: their cleanup lines against when they were recorded).
BEFORE, AFTER, GAP, SKEW = 60.0, 120.0, 60.0, 90.0
_LOST_KEPT = 10_000  # lost sessions waiting for their cleanup line (it comes within moments)

# A whole line: its time stamp ("Nov 29 14:55:01[.123456]", or RFC 3339's in one word), the
# host (syslog may leave it out), then Postfix's instance and program. Anchored so that text
# a mail client gets into another line (a HELO name, an address in a reject line) can never
# pass for one of these.
_STAMP = rb"([A-Z][a-z]{2} +\d+ \d\d:\d\d:\d\d(?:\.\d+)?|\d{4}-\d\d-\d\dT\S+)"
_HEAD = _STAMP + rb" (?:(\S+) )?([\w.-]+)"
_CLEANUP = re.compile(_HEAD + rb"/cleanup\[\d+\]: ([0-9A-Za-z]+): message-id=(\S+)\r?\n?$")
_ACTION = re.compile(_HEAD + rb"/cleanup\[\d+\]: ([0-9A-Za-z]+): (?:milter-)?(reject|discard|hold): ")
_ACTIVE = re.compile(
    _HEAD + rb"/qmgr\[\d+\]: ([0-9A-Za-z]+): from=<(.*)>, size=\d+, nrcpt=(\d+) \(queue active\)\r?\n?$"
)
_SMTPD = re.compile(_HEAD + rb"(?:/[\w.-]+)?/smtpd\[(\d+)\]: (.*)")
_CLIENT = re.compile(rb"([0-9A-Za-z]+): client=")
_LOST = re.compile(rb"(?:lost connection|timeout) after (?:DATA|BDAT)\b")
_ENDED = re.compile(rb"(?:disconnect from|lost connection|timeout after|too many errors after) ")
_ANY = re.compile(_HEAD + rb"(?:/[\w.-]+)*/[\w.-]+\[\d+\]: ")  # a line of Postfix's programs


class Taken(NamedTuple):
    """A message the server's log shows it took."""

    queue_id: str
    log: Path


@dataclass
class _Message:
    """One message of ours as the logs tell it (one queue ID)."""

    message_id: str
    path: Path
    lost: bool = False  # its session lost in DATA with it the last message
    outcome: str = ""  # "taken", "rejected", "other" (a qmgr line with another envelope)
    queue_id: str = ""


@dataclass
class ServerLog:
    """What the logs say of the Message-IDs asked about (see the module's doc)."""

    taken: dict[str, Taken] = field(default_factory=dict)
    thrown_away: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)  # received, nothing tells: not to send again yet
    other_envelope: set[str] = field(default_factory=set)  # of held: a qmgr line with another envelope
    has_the_send: bool = False  # a message of the send (any of *known*) is in the logs
    spans: list[tuple[dt.datetime, dt.datetime]] = field(default_factory=list)  # times the logs cover
    clock_off: float | None = None  # seconds the logs' stamps run ahead of this machine's clock

    def covers(self, when: float, before: float = BEFORE) -> bool:
        """Whether the logs cover the time *when* that an uncertain message was last recorded:
        from *before* seconds before it to AFTER after, in one span (see GAP), with a clock
        that agrees with this machine's (see SKEW)."""
        if self.clock_off is None or abs(self.clock_off) > SKEW:
            return False
        at = dt.datetime.fromtimestamp(when, dt.UTC)
        start, end = at - dt.timedelta(seconds=before), at + dt.timedelta(seconds=AFTER)
        return any(first <= start and end <= last for first, last in self.spans)


def read(
    paths: Iterable[Path], senders: Mapping[str, str], known: Mapping[str, float] | None = None
) -> ServerLog:
    """Read the Postfix logs at *paths* for the Message-IDs of *senders* (each with the
    envelope sender its message went out with); *known*: the send's other Message-IDs,
    with when each was last recorded, to tell whether the logs hold the send at all
    (``ServerLog.has_the_send``) and whether their clock is this machine's
    (``ServerLog.clock_off``).

    Raise ConfigError (DigestErrors for several) for a log that cannot be read or has
    no line of Postfix's in it, and when no file has a line from Postfix's cleanup (not
    the log of a server that received mail). The files are read as a stream, line by
    line: a log of many GB costs no memory.
    """
    wanted = {m.encode("ascii", "replace"): s.encode("utf-8") for m, s in senders.items()}
    reader = _Reader(wanted, {m.encode("ascii", "replace"): t for m, t in (known or {}).items()})
    errors: list[DigestError] = []
    paths = sorted(paths, key=_order)
    hint = (
        "give the log of the Postfix instance digest sends through (on Debian /var/log/mail.log; "
        "or journalctl's output for postfix, saved to a file or given as <(journalctl ...); or "
        "Postfix's maillog_file)"
    )
    for path in paths:
        try:
            if not reader.read(path):
                raise ConfigError("no line of Postfix's is in it (not a Postfix log?)", path=path, hint=hint)
        except ConfigError as e:
            errors.append(e)
    raise_all(errors)
    if not reader.cleanup:
        raise ConfigError(
            f"no message that Postfix received is logged in {'it' if len(paths) == 1 else 'them'} "
            "(no 'postfix/cleanup' line)",
            path=paths[0] if len(paths) == 1 else None,
            hint=hint,
        )
    return reader.result()


def _order(path: Path) -> tuple[float, float]:
    """Oldest first: by the time of a file's first line of Postfix's (a copy's modification
    time is the copy's), else by its modification time."""
    try:
        mtime = path.stat().st_mtime
        if not path.is_file():  # a pipe is read once, and last
            return (float("inf"), mtime)
        with path.open("rb") as raw:
            lines = _lines(raw)
            for _ in range(1000):
                line = lines.readline(MAX_LINE)
                if not line:
                    break
                if (m := _ANY.match(line)) and (when := _time(m[1])):
                    return (when.timestamp(), mtime)
        return (mtime, mtime)
    except (OSError, EOFError, zlib.error):
        return (0.0, 0.0)  # reported when it is read


def _lines(raw: BufferedReader) -> BufferedReader | gzip.GzipFile:
    """The lines of an open log, compressed or not (known by its content: a peek, so a pipe
    loses nothing)."""
    return gzip.GzipFile(fileobj=raw) if raw.peek(2)[:2] == b"\x1f\x8b" else raw


class _Reader:
    def __init__(self, wanted: dict[bytes, bytes], known: dict[bytes, float]) -> None:
        self.wanted, self.known = wanted, known
        self.has_the_send = False
        self.clock: list[tuple[bytes, float]] = []  # (cleanup's stamp, when recorded) of known ones
        self.open: dict[tuple, _Message] = {}  # (host, instance, queue id) -> ours, until reused
        self.done: list[_Message] = []
        # smtpd sessions: (host, instance, pid) -> the queue id of its last message, while
        # no refused recipient came after it
        self.sessions: dict[tuple, bytes | None] = {}
        self.lost: OrderedDict[tuple, None] = OrderedDict()  # lost before their cleanup line
        self.cleanup = False  # a cleanup line was read
        self.spans: list[tuple[bytes, bytes]] = []  # each file's first and last time stamps

    def read(self, path: Path) -> bool:
        """Read one log; return whether it has a line of Postfix's."""
        first = b""
        last = b""  # the last line of Postfix's, for its time stamp
        try:
            with path.open("rb") as raw:
                lines = _lines(raw)
                while line := lines.readline(MAX_LINE):
                    if len(line) == MAX_LINE and not line.endswith(b"\n"):
                        while (rest := lines.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                            pass  # the rest of an overlong line is no line of its own
                        continue
                    if line[:1] == b"\0":
                        line = line.lstrip(b"\0")  # what a crash leaves before the next line
                    if b"/cleanup[" in line:
                        if m := _CLEANUP.match(line):
                            self.cleanup = True
                            self._cleanup(m, path)
                        elif m := _ACTION.match(line):
                            self._action(m)
                    elif b"/qmgr[" in line:
                        if b"(queue active)" in line and (m := _ACTIVE.match(line)):
                            self._active(m)
                    elif b"/smtpd[" in line:
                        if m := _SMTPD.match(line):
                            self._smtpd(m)
                    elif b"postfix/" not in line:
                        continue
                    last = line
                    if not first and (m := _ANY.match(line)):
                        first = m[1]
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise ConfigError(
                f"cannot read the server's log: {getattr(e, 'strerror', None) or e}",
                path=path,
                hint="check the path given to --server-log (reading the system's mail log may need "
                "the adm group)",
            ) from None
        if first and (m := _ANY.match(last)):
            self.spans.append((first, m[1]))
        return bool(first)

    def _cleanup(self, m: re.Match, path: Path) -> None:
        key, message_id = (m[2], m[3], m[4]), m[5]
        ended = self.open.pop(key, None)  # the queue id names a new message now
        if ended is not None:
            self.done.append(ended)
        lost = self.lost.pop(key, False) is None
        if message_id in self.wanted:
            self.has_the_send = True
        elif (recorded := self.known.get(message_id)) is not None:
            self.has_the_send = True
            if len(self.clock) < 1000:
                self.clock.append((m[1], recorded))
        if message_id in self.wanted:
            self.open[key] = _Message(
                message_id.decode("ascii"), path, lost=lost, queue_id=m[4].decode("ascii")
            )

    def _action(self, m: re.Match) -> None:
        ours = self.open.get((m[2], m[3], m[4]))
        if ours is not None and not ours.outcome:
            ours.outcome = "rejected" if m[5] == b"reject" else "taken"  # hold, discard: answered 250

    def _active(self, m: re.Match) -> None:
        ours = self.open.get((m[2], m[3], m[4]))
        if ours is None or ours.outcome in ("taken", "rejected"):
            return
        sender = self.wanted[ours.message_id.encode("ascii")]
        ours.outcome = "taken" if m[5] == sender and m[6] == b"1" else "other"

    def _smtpd(self, m: re.Match) -> None:
        session, text = (m[2], m[3], m[4]), m[5]
        if text.startswith(b"connect from "):
            self.sessions[session] = None
        elif c := _CLIENT.match(text):
            self.sessions[session] = c[1]
        elif text.startswith(b"NOQUEUE: "):  # a refused recipient: the last message is not ours to lose
            self.sessions[session] = None
        elif _ENDED.match(text):
            queue_id = self.sessions.pop(session, None)
            if queue_id is not None and _LOST.match(text):
                key = (m[2], m[3], queue_id)
                ours = self.open.get(key)
                if ours is not None:
                    ours.lost = True
                else:  # its cleanup line may come later
                    self.lost[key] = None
                    if len(self.lost) > _LOST_KEPT:
                        self.lost.popitem(last=False)

    def result(self) -> ServerLog:
        out = ServerLog(has_the_send=self.has_the_send)
        fates: dict[str, list[_Message]] = {}
        for message in [*self.done, *self.open.values()]:
            fates.setdefault(message.message_id, []).append(message)
        for message_id, messages in fates.items():
            taken = next((x for x in messages if x.outcome == "taken"), None)
            if taken is not None:
                out.taken[message_id] = Taken(taken.queue_id, taken.path)
            elif all(x.outcome == "rejected" or (x.lost and not x.outcome) for x in messages):
                out.thrown_away.add(message_id)
            else:
                out.held.add(message_id)
                if any(x.outcome == "other" for x in messages):
                    out.other_envelope.add(message_id)
        spans = sorted(
            (start, end) for start, end in ((_time(a), _time(b)) for a, b in self.spans) if start and end
        )
        for start, end in spans:  # files that follow each other make one span
            if out.spans and start - out.spans[-1][1] <= dt.timedelta(seconds=GAP):
                out.spans[-1] = (out.spans[-1][0], max(end, out.spans[-1][1]))
            else:
                out.spans.append((start, end))
        offsets = sorted(
            when.timestamp() - recorded for stamp, recorded in self.clock if (when := _time(stamp))
        )
        if offsets:
            out.clock_off = offsets[len(offsets) // 2]
        return out


def _time(stamp: bytes) -> dt.datetime | None:
    """The time of a log's stamp, or None; syslog's has no year and is local time: this
    year's, or last year's if that would be in the future. A year far from now is no time
    (a clock not set yet at boot)."""
    when = _parsed(stamp)
    if when is None or not 2000 <= when.year <= dt.date.today().year + 1:
        return None
    return when


def _parsed(stamp: bytes) -> dt.datetime | None:
    text = stamp.decode("ascii", "replace")
    try:
        if "T" in text:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            return when if when.tzinfo else when.astimezone()
        now = dt.datetime.now().astimezone()
        when = dt.datetime.strptime(f"{now.year} {' '.join(text.split())}".split(".")[0], "%Y %b %d %H:%M:%S")
        when = when.astimezone()
        if when > now + dt.timedelta(days=1):
            when = when.replace(year=when.year - 1)
        return when
    except (ValueError, OverflowError, OSError):
        return None
