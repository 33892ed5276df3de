"""What a mail server's log says of uncertain messages: which of them it took.

A message is uncertain when its final ``.`` went out but no reply came back (RFC 1047):
the server may have queued it. Postfix logs, for each message it receives, the queue
ID it gave it with the message's Message-ID (``cleanup``); once the message is safely
in its queue, the queue ID again with its envelope (``qmgr``); and, for a message whose
client went away before its end, that the session was lost in its DATA (``smtpd``)::

    ... relay postfix/smtpd[4240]: 4XyZ1b2QdKz9: client=localhost[127.0.0.1]
    ... relay postfix/cleanup[4242]: 4XyZ1b2QdKz9: message-id=<3074f8…@worlddigest.example.org>
    ... relay postfix/qmgr[311]: 4XyZ1b2QdKz9: from=<bounces+…@…>, size=15213, nrcpt=1 (queue active)
    ... relay postfix/smtpd[4240]: lost connection after DATA (96256 bytes) from localhost[127.0.0.1]

So each uncertain message is, by the log:

- *queued*: its ``cleanup`` line, then the ``qmgr`` line of the same queue ID, with the
  envelope sender digest used for that reader and one recipient. The sender check keeps
  another message that names the same Message-ID (anybody can write one) or that has
  the same queue ID later (Postfix's short queue IDs come back) from passing for it.
- *thrown away*: its ``cleanup`` line, then its session lost or timed out in DATA.
- *received, not confirmed*: its ``cleanup`` line only. Postfix may still be about to
  log it queued (its queue manager falls behind when the queue is full): it must not be
  sent again yet.
- *not received*: no line of it at all.

A queue ID counts on one host and Postfix instance (its ``syslog_name``). The files are
read oldest first (by modification time), as one stream, so that a message whose lines
a rotation split is found; rotated logs may be gzip-compressed. The lines are found
wherever Postfix writes them (its own ``maillog_file``, syslog, ``journalctl``'s short
output), whatever the time stamp.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigError, DigestError, raise_all

# A whole line: its time stamp ("Nov 29 14:55:01[.123456]", or RFC 3339's in one word), the
# host (syslog may leave it out), then Postfix's program and the message. Anchored so that
# text a mail client gets into another line (a HELO name, an address in a reject line) can
# never pass for one of these.
_HEAD = rb"^(?:[A-Z][a-z]{2} +\d+ \d\d:\d\d:\d\d(?:\.\d+)?|\d{4}-\d\d-\d\dT\S+) (?:(\S+) )?([\w.-]+)"
_CLEANUP = re.compile(_HEAD + rb"/cleanup\[\d+\]: ([0-9A-Za-z]+): message-id=(\S+)\r?\n?$")
_ACTIVE = re.compile(
    _HEAD + rb"/qmgr\[\d+\]: ([0-9A-Za-z]+): from=<(.*)>, size=\d+, nrcpt=(\d+) \(queue active\)\r?\n?$"
)
_CLIENT = re.compile(_HEAD + rb"/smtpd\[(\d+)\]: ([0-9A-Za-z]+): client=")
_LOST = re.compile(_HEAD + rb"/smtpd\[(\d+)\]: (?:lost connection|timeout) after (?:DATA|BDAT)\b")


class Taken(NamedTuple):
    """A message the server's log shows it queued."""

    queue_id: str
    log: Path


@dataclass
class ServerLog:
    """What the logs say of the Message-IDs asked about (see the module's doc)."""

    queued: dict[str, Taken] = field(default_factory=dict)
    thrown_away: set[str] = field(default_factory=set)
    received: set[str] = field(default_factory=set)  # a cleanup line: queued, thrown away or neither
    covers: bool = False  # a message of the send (any of *known*) is in the logs


def read(paths: Iterable[Path], senders: Mapping[str, str], known: Iterable[str] = ()) -> ServerLog:
    """Read the Postfix logs at *paths* for the Message-IDs of *senders* (each with the
    envelope sender its message went out with); *known*: the send's other Message-IDs,
    to tell whether the logs cover the send at all (``ServerLog.covers``).

    Raise ConfigError (DigestErrors for several) for a log that cannot be read, and
    for one with no line from Postfix's cleanup in it (not a Postfix log, or not the
    one of the server that was sent to). The files are read as a stream, line by
    line: a log of many GB costs no memory.
    """
    wanted = {m.encode("ascii", "replace"): s.encode("utf-8") for m, s in senders.items()}
    reader = _Reader(wanted, {m.encode("ascii", "replace") for m in known} | set(wanted))
    errors: list[DigestError] = []
    for path in sorted(paths, key=_written):
        try:
            if not reader.read(path):
                raise ConfigError(
                    "no message that Postfix received is logged in it (no 'postfix/cleanup' line)",
                    path=path,
                    hint="give the log of the Postfix instance digest sends through (on Debian "
                    "/var/log/mail.log, or 'journalctl -t postfix/cleanup -t postfix/qmgr -t "
                    "postfix/smtpd' saved to a file; or Postfix's maillog_file)",
                )
        except ConfigError as e:
            errors.append(e)
    raise_all(errors)
    return reader.result


def _written(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0  # reported when it is read


class _Reader:
    def __init__(self, wanted: dict[bytes, bytes], known: set[bytes]) -> None:
        self.wanted, self.known = wanted, known
        self.result = ServerLog()
        # (host, instance, queue id) -> the Message-ID its cleanup line gave, if one asked about
        self.pending: dict[tuple, bytes] = {}
        self.sessions: dict[tuple, bytes] = {}  # (host, instance, smtpd pid) -> its queue id
        # Queue ids whose session was lost in DATA before their cleanup line was read: the
        # processes log apart, and Postfix's smtpd may log the loss before cleanup logs the
        # Message-ID of what it got (seen in the tests' Postfix).
        self.lost: set[tuple] = set()

    def read(self, path: Path) -> bool:
        """Read one log; return whether it has a cleanup line."""
        cleanup = False
        try:
            with path.open("rb") as raw:
                gzipped = raw.read(2) == b"\x1f\x8b"
            with gzip.open(path, "rb") if gzipped else path.open("rb") as lines:
                for line in lines:
                    if b"/cleanup[" in line:
                        m = _CLEANUP.match(line)
                        if m:
                            cleanup = True
                            self._cleanup(m)
                    elif b"/qmgr[" in line:
                        if self.pending and (m := _ACTIVE.match(line)):
                            self._queued(m, path)
                    elif b"/smtpd[" in line:
                        if m := _CLIENT.match(line):
                            self.sessions[(m[1], m[2], m[3])] = m[4]
                            self.lost.discard((m[1], m[2], m[4]))  # a new message with this id
                        elif m := _LOST.match(line):
                            self._lost(m)
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise ConfigError(
                f"cannot read the server's log: {getattr(e, 'strerror', None) or e}",
                path=path,
                hint="check the path given to --server-log (reading the system's mail log may need "
                "the adm group)",
            ) from None
        return cleanup

    def _cleanup(self, m: re.Match) -> None:
        key, message_id = (m[1], m[2], m[3]), m[4]
        if message_id in self.known:
            self.result.covers = True
        lost = key in self.lost
        self.lost.discard(key)
        if message_id in self.wanted:
            text = message_id.decode("ascii")
            self.result.received.add(text)
            if lost:  # its session was lost before this line: thrown away
                self.result.thrown_away.add(text)
            else:
                self.pending[key] = message_id
                self.result.thrown_away.discard(text)  # a later attempt got there: its fate counts
        else:  # the queue id names another message now
            self.pending.pop(key, None)

    def _lost(self, m: re.Match) -> None:
        queue_id = self.sessions.get((m[1], m[2], m[3]))
        if queue_id is None:
            return
        key = (m[1], m[2], queue_id)
        message_id = self.pending.pop(key, None)
        if message_id is not None:
            self.result.thrown_away.add(message_id.decode("ascii"))
        else:  # its cleanup line may come later
            self.lost.add(key)

    def _queued(self, m: re.Match, path: Path) -> None:
        message_id = self.pending.pop((m[1], m[2], m[3]), None)
        if message_id is not None and m[4] == self.wanted[message_id] and m[5] == b"1":
            text = message_id.decode("ascii")
            self.result.queued.setdefault(text, Taken(m[3].decode("ascii"), path))
            self.result.thrown_away.discard(text)  # an earlier attempt's: this one is queued
