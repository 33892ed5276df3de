"""Test copies: one '[TEST]' message to each address given, outside the journal."""

from __future__ import annotations

import asyncio
from email.utils import make_msgid, parseaddr
from pathlib import Path

from ..config import Project
from ..issue import load_issue
from ..message import MessageTemplate, Recipient
from ..render import render_issue
from .outbox import OutboxMessenger
from .recipients import check_addresses, envelope_address
from .transport import PermanentFailure, SMTPMessenger, TemporaryFailure, Uncertain


def send_tests(
    project: Project, ref: str, addresses: list[str], outbox: Path | None = None, dry_run: bool = False
) -> list[str]:
    """Send one '[TEST]' copy to each address, outside the journal; return the replies.

    Each copy gets a fresh Message-ID, so a corrected copy is not dropped as a duplicate.
    A subscriber of the store gets their own fields, so the copy shows what they will
    get; any other address the fields' defaults.
    """
    settings = project.settings()
    issue = load_issue(project, ref)
    rendered = render_issue(project, issue, personal=True)
    template = MessageTemplate(rendered, secret=settings.secret or "test", subject_prefix="[TEST] ")
    sender = envelope_address(parseaddr(template.newsletter.sender)[1])
    checked = check_addresses(addresses, "--test")
    if dry_run:
        return ["dry run"] * len(checked)
    messenger = OutboxMessenger(outbox) if outbox else SMTPMessenger(settings)
    fields = _store_fields(project, checked)

    def fresh(address: str) -> bytes:
        data = template.personalise(Recipient(address, fields.get(address, {})), wire=messenger.wire)
        old = f"Message-ID: {template.message_id(address)}".encode()
        new = f"Message-ID: {make_msgid('test', template.newsletter.sender_domain)}".encode()
        return data.replace(old, new, 1)

    async def push_all() -> list[str]:
        replies = []
        try:
            for a in checked:
                try:
                    replies.append(await messenger.push(sender, envelope_address(a), fresh(a)))
                except (TemporaryFailure, PermanentFailure, Uncertain) as e:
                    replies.append(f"not sent: {e}")
            return replies
        finally:
            await messenger.close()

    return asyncio.run(push_all())


def _store_fields(project: Project, addresses: list[str]) -> dict[str, dict[str, str]]:
    """The fields of those of *addresses* that are subscribers of the store (read only)."""
    from .. import db, subscribers

    path = project.state_dir / db.DB_NAME
    if not path.is_file():
        return {}
    conn = db.connect(path)
    try:
        found = {a: subscribers.get(conn, a) for a in addresses}
    finally:
        conn.close()
    return {a: dict(s.fields) for a, s in found.items() if s is not None}
