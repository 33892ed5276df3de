"""A real SMTP server on loopback for the tests (aiosmtpd), with faults on demand."""

from __future__ import annotations

import socket
import threading
from collections import defaultdict
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER, PASSWORD = "digest", "s3cret-Pa55"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    sender: str
    recipient: str
    data: bytes


@dataclass
class Recorder:
    """Records what arrives; answers RCPT from `faults` (address -> replies, used in turn)."""

    received: list[Received] = field(default_factory=list)
    faults: dict[str, list[str]] = field(default_factory=dict)
    drop_in_data: set[str] = field(default_factory=set)
    rcpt_seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        key = address.lower()
        with self.lock:
            self.rcpt_seen[key] += 1
            replies = self.faults.get(key)
            reply = (replies.pop(0) if len(replies) > 1 else replies[0]) if replies else "250"
        if not reply.startswith("250"):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        for rcpt in envelope.rcpt_tos:
            if rcpt.lower() in self.drop_in_data:
                self.drop_in_data.discard(rcpt.lower())
                server.transport.close()  # the connection drops before the reply
                return "451 dropped"
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append(Received(envelope.mail_from, rcpt, envelope.original_content))
        return "250 Message accepted for delivery"

    def by_recipient(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = defaultdict(list)
        with self.lock:
            for r in self.received:
                out[r.recipient.lower()].append(r)
        return out


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


class Server:
    """Start/stop an aiosmtpd server; `tls` adds STARTTLS (required) and AUTH."""

    def __init__(self, tls_context=None, implicit_tls: bool = False) -> None:
        self.recorder = Recorder()
        self.port = free_port()
        kwargs = {}
        if implicit_tls:  # TLS from the first byte (port 465 style), then AUTH
            # aiosmtpd only counts STARTTLS as TLS for AUTH; this connection is TLS too.
            kwargs = {"ssl_context": tls_context, "authenticator": authenticator,
                      "auth_required": True, "auth_require_tls": False}
        elif tls_context is not None:
            kwargs = {"tls_context": tls_context, "require_starttls": True,
                      "authenticator": authenticator, "auth_required": True}
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port,
                                     server_hostname="localhost", **kwargs)

    def __enter__(self) -> Server:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
