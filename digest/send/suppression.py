"""A running send's answers to "is this reader suppressed?": read a batch of readers at a
time, and read again whenever another process (the web app, ``digest unsubscribe``, a
bounce) has written to the database, so an unsubscribe committed before a message is
claimed always stops it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from .. import subscribers


class SuppressionCache:
    """Which of the readers read ahead are suppressed: one query for a batch of them.

    While a send logs its entries, a claim is checked against these answers, and
    they are read again whenever another process has written to the database since
    (``PRAGMA data_version``, asked at every claim): an unsubscribe committed before
    a message is claimed always stops it, as when the check and the claim were one
    SQLite transaction. A query of its own for every claim cost about 20 µs a
    message in the send (SQLite's cache is cold there).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.known: dict[str, bool] = {}  # hash -> suppressed, for readers not yet claimed
        self.version = self._version()

    def expect(self, hashes: Iterable[str]) -> None:
        """Read ahead for the readers of a new batch (answers left from the last one go:
        a reader of it still to be claimed is read again at its claim)."""
        self._changed()
        self.known = {}
        self._read(hashes, again=False)

    def refused(self, claims: dict[int, str]) -> set[int]:
        """Return the claims whose reader is suppressed; each answer serves one claim."""
        known = self.known
        if self._changed():
            self._read(claims.values(), again=True)
        elif not all(h in known for h in claims.values()):  # a retry's, claimed before
            self._read(claims.values(), again=False)
        return {i for i, h in claims.items() if known.pop(h, False)}

    def _version(self) -> int:
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def _changed(self) -> bool:
        """Whether another connection committed since the answers were read."""
        version = self._version()
        changed, self.version = version != self.version, version
        return changed

    def _read(self, hashes: Iterable[str], again: bool) -> None:
        wanted = set(hashes)
        if again:
            wanted.update(self.known)
        found = subscribers.suppressed_among(self.conn, wanted)
        for h in wanted:
            self.known[h] = h in found
