"""What a mail server's log says of uncertain messages: which of them it took.

A message is uncertain when its final ``.`` went out but no reply came back (RFC 1047):
the server may have queued it. Postfix logs, for each message it receives, the
queue ID it gave it with the message's Message-ID (``cleanup``), and, once the
message is safely in its queue, the same queue ID again (``qmgr``)::

    ... postfix/cleanup[4242]: 4XyZ1b2QdKz9: message-id=<3074f8…@worlddigest.example.org>
    ... postfix/qmgr[311]: 4XyZ1b2QdKz9: from=<bounces+…@…>, size=15213, nrcpt=1 (queue active)

Only that pair counts as taken: a ``cleanup`` line alone is also written for a
message whose client went away before its end, which Postfix then throws away.
The lines are found wherever Postfix writes them (its own ``maillog_file``, or
syslog, whatever the time stamp and the host name before them, and for a
second instance whose ``syslog_name`` is ``postfix-out``, say); rotated logs may
be gzip-compressed.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigError, DigestError, raise_all

# A whole line: its time stamp ("Nov 29 14:55:01", or RFC 3339's in one word), the host, then
# Postfix's program and the message. Anchored so that text a mail client gets into another
# line (a HELO name, an address in a reject line) can never pass for one of these.
_HEAD = rb"^(?:[A-Z][a-z]{2} +\d+ \d\d:\d\d:\d\d|\S+) \S+ [\w.-]+"
_CLEANUP = re.compile(_HEAD + rb"/cleanup\[\d+\]: ([0-9A-Za-z]+): message-id=(\S+)\r?\n?$")
_ACTIVE = re.compile(
    _HEAD + rb"/qmgr\[\d+\]: ([0-9A-Za-z]+): from=<.*>, size=\d+, nrcpt=\d+ \(queue active\)\r?\n?$"
)


class Taken(NamedTuple):
    """A message the server's log shows it took."""

    queue_id: str
    log: Path


def taken(paths: Iterable[Path], message_ids: Iterable[str]) -> dict[str, Taken]:
    """Return, of *message_ids*, those that the Postfix logs at *paths* show as queued.

    Raise ConfigError (DigestErrors for several) for a log that cannot be read, and
    for one with no line from Postfix's cleanup in it (not a Postfix log, or not the one of the server that
    was sent to). The files are read as a stream, line by line: a log of many GB
    costs no memory.
    """
    wanted = {m.encode("ascii", "replace") for m in message_ids}
    found: dict[str, Taken] = {}
    errors: list[DigestError] = []
    for path in paths:
        try:
            if not _read(path, wanted, found):
                raise ConfigError(
                    "no message that Postfix received is logged in it (no 'postfix/cleanup' line)",
                    path=path,
                    hint="give the log of the Postfix instance digest sends through, of the time of "
                    "the send (on Debian /var/log/mail.log, or Postfix's maillog_file)",
                )
        except ConfigError as e:
            errors.append(e)
    raise_all(errors)
    return found


def _read(path: Path, wanted: set[bytes], found: dict[str, Taken]) -> bool:
    """Add what the log at *path* shows taken to *found*; return whether it logs cleanup."""
    pending: dict[bytes, bytes] = {}  # queue id -> the Message-ID its cleanup line gave
    cleanup = False
    try:
        opened = gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")
        with opened as lines:
            for line in lines:
                if b"/cleanup[" in line:
                    m = _CLEANUP.match(line)
                    if m:
                        cleanup = True
                        if m[2] in wanted:
                            pending[m[1]] = m[2]
                        else:  # a queue id used again (Postfix's short ids are): not ours now
                            pending.pop(m[1], None)
                elif b"/qmgr[" in line and pending:
                    m = _ACTIVE.match(line)
                    if m and m[1] in pending:
                        message_id = pending.pop(m[1]).decode("ascii")
                        found.setdefault(message_id, Taken(m[1].decode("ascii"), path))
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ConfigError(
            f"cannot read the server's log: {getattr(e, 'strerror', None) or e}",
            path=path,
            hint="check the path given to --server-log (reading /var/log/mail.log may need the adm group)",
        ) from None
    return cleanup
