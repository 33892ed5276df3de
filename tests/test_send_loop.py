"""The send loop's control flow with a scripted journal and messenger: it always ends.

The real journal and real servers are in test_send*.py; these drive the failures
that are hard to provoke there (a journal read failing mid-send, a bug in a step)
and check that the send stops with one clear error instead of hanging.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import types

import pytest

from digest.errors import SendError
from digest.message import Recipient
from digest.send import journal as journal_module
from digest.send import loop
from digest.send.journal import Delivery, JournalError
from digest.send.replies import PermanentFailure

from .scripted import messenger, scripted_server

TEMPLATE = types.SimpleNamespace(
    newsletter=types.SimpleNamespace(sender="News <news@example.org>"),
    rendered=types.SimpleNamespace(personal=True),
    # as MessageTemplate.pieces lays them out: the Date line (empty here) at DATE_AT, the
    # Message-ID line at MESSAGE_ID_AT
    pieces=lambda recipient, **_: [
        b"Subject: x\r\n",
        b"To: " + recipient.email.encode() + b"\r\n",
        b"",
        b"Message-ID: <" + recipient.email.encode() + b">\r\n",
        b"\r\nx\r\n.\r\n",
    ],
    assemble=b"".join,
)


class Journal:
    """Hands out *together* deliveries a read; once all *good* are out, a read fails
    as a locked database would (or, with ``then_fail=False``, finds nothing more)."""

    path = "journal.sqlite3"

    def __init__(
        self, good: int, suppressed: frozenset[int] = frozenset(), together: int = 1, then_fail: bool = True
    ) -> None:
        self.left = list(range(1, good + 1))
        self.good, self.suppressed, self.together, self.then_fail = good, suppressed, together, then_fail
        self.committed: list[tuple[int, str, str | None]] = []
        self.message_ids: dict[int, str] = {}

    def counts(self, issue: str) -> dict[str, int]:
        return {"pending": self.good, "deferred": 0, "sending": 0, "failed": 0}

    def fold_due(self) -> None:  # no log to fold
        pass

    @journal_module._reads  # as the real journal's: a failed read is a JournalError
    def due(self, issue, states, after, limit):
        if not self.left and self.then_fail:
            raise sqlite3.OperationalError("database is locked")
        out, self.left = self.left[: self.together], self.left[self.together :]
        return [Delivery(i, Recipient(f"r{i}@example.org"), "pending") for i in out]

    def record(self, entries, claims=None, message_ids=None):
        self.committed += entries
        self.message_ids.update(message_ids or {})
        return {i for i in claims or {} if i in self.suppressed}


class Messenger:
    wire = True

    def __init__(self, outcome: object) -> None:
        self.outcome, self.sent = outcome, []

    def ready(self, callback) -> None:
        callback(None)

    def check_envelope(self, sender: str, recipient: str) -> None:
        pass

    def transmit(self, sender, recipient, data, done) -> None:
        self.sent.append(recipient)
        asyncio.get_running_loop().call_soon(done, self.outcome)

    async def close(self) -> None:
        pass


def _run(send: loop.SendLoop) -> BaseException | None:
    """Run the send in a thread; fail the test if it has not ended within 10 s."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            send.run()
        except BaseException as e:  # noqa: BLE001 - what it raised is what is tested
            raised.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the send hangs"
    return raised[0] if raised else None


@pytest.fixture(autouse=True)
def one_a_batch(monkeypatch) -> None:
    monkeypatch.setattr(loop, "BATCH", 1)  # a journal read for every delivery


def test_a_journal_read_failing_after_a_failed_message_stops_the_send() -> None:
    messenger = Messenger(PermanentFailure("550 5.1.1 no such user"))
    send = loop.SendLoop("issue", TEMPLATE, Journal(good=1), lambda: messenger, loop.Options())
    error = _run(send)
    assert isinstance(error, JournalError)
    assert error.message == "cannot read the send journal: database is locked"


def test_one_lane_failing_in_a_shared_commit_does_not_strand_the_others() -> None:
    # r1's claim is refused (its reader left) and its lane's next read fails, in the same
    # commit as r2's claim: r2 must still go out, not stay claimed and unsent.
    journal = Journal(good=2, suppressed=frozenset({1}))
    messengers: list[Messenger] = []

    def factory() -> Messenger:
        messengers.append(Messenger("250 2.0.0 queued"))
        return messengers[-1]

    send = loop.SendLoop("issue", TEMPLATE, journal, factory, loop.Options(workers=2))
    error = _run(send)
    assert isinstance(error, JournalError)
    sent = [r for m in messengers for r in m.sent]
    assert sent == ["r2@example.org"]
    assert (2, "sent", "250 2.0.0 queued") in journal.committed


def test_a_bug_in_a_step_stops_the_send_with_a_clear_error() -> None:
    def broken(recipient, delivery_id):
        raise RuntimeError("boom")

    send = loop.SendLoop(
        "issue", TEMPLATE, Journal(good=3), lambda: Messenger("250 ok"), loop.Options(), envelope_sender=broken
    )
    error = _run(send)
    assert isinstance(error, SendError)
    assert error.message == "the send stopped on an unexpected error: RuntimeError('boom')"


def test_a_421_right_behind_the_250_moves_the_next_message_to_a_new_connection() -> None:
    # The relay answers the final dot and says it is closing, in one read: the next
    # message must not be claimed for, or written to, that connection.
    connections: list[list[bytes]] = []
    ready = threading.Event()
    port: list[int] = []

    def server() -> None:
        async def serve() -> None:
            srv = await scripted_server(connections, first_closes_with=b"421 4.3.2 closing\r\n")
            port.append(srv.sockets[0].getsockname()[1])
            ready.set()
            await asyncio.sleep(15)
            srv.close()

        asyncio.run(serve())

    threading.Thread(target=server, daemon=True).start()
    ready.wait(10)
    journal = Journal(good=2, together=2, then_fail=False)

    send = loop.SendLoop("issue", TEMPLATE, journal, lambda: messenger(port[0]), loop.Options(backoff=5))
    assert _run(send) is None
    assert [e for e in journal.committed if e[1] == "deferred"] == []  # no retry was needed
    assert [s for _, s, _ in journal.committed] == ["sending", "sent", "sending", "sent"]
    # Each claim went with its message's Message-ID, as the message carried it.
    assert journal.message_ids == {1: "<r1@example.org>", 2: "<r2@example.org>"}
    assert b"Message-ID: <r2@example.org>\r\n" in connections[1]
    assert len(connections) == 2
    assert b"RCPT TO:<r2@example.org>\r\n" in connections[1]
