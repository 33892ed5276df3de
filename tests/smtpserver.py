"""A real SMTP server on loopback for the tests (aiosmtpd), with faults on demand.

``Server(pipelining=True)`` advertises PIPELINING (aiosmtpd reads pipelined commands in
order), so the client's pipelined path runs against every fault.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from .system import free_port  # noqa: F401 - the tests import it from here too

USER, PASSWORD = "digest", "s3cret-Pa55"
MAIL_LIMIT_REPLY = "450 4.7.1 Error: too much mail from 127.0.0.1"  # Postfix's words


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
    drop_in_data: set[str] = field(default_factory=set)  # close after the final dot, no reply
    dropped: list[Received] = field(default_factory=list)  # the messages read, then dropped so
    hang_in_data: set[str] = field(default_factory=set)  # never answer the final dot
    greeting_faults: list[str] = field(default_factory=list)  # replies instead of the 220
    mail_faults: list[str] = field(default_factory=list)  # replies to MAIL, used in turn
    mail_options: list[list[str]] = field(default_factory=list)  # of every MAIL, in turn
    data_faults: dict[str, str] = field(default_factory=dict)  # address -> reply to its message
    pipelining: bool = False
    max_connections: int | None = None  # more at once get '421 too many connections', as Postfix's
    # At most this many MAILs in a window of this many seconds, counted from the window's
    # first (Postfix's anvil: smtpd_client_message_rate_limit); more get MAIL_LIMIT_REPLY.
    mail_limit: tuple[int, float] | None = None
    mail_window: list[float] = field(default_factory=lambda: [0.0, 0])  # start, MAILs in it
    throttled: int = 0  # MAILs refused so
    open_connections: int = 0
    rcpt_seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        with self.lock:
            self.mail_options.append(list(mail_options))
            reply = self.mail_faults.pop(0) if self.mail_faults else "250 OK"
            if self.mail_limit is not None and reply.startswith("250"):
                reply = self._paced()
        if not reply.startswith("250"):
            if reply.startswith("421"):
                server.transport.close()
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return reply

    def _paced(self) -> str:
        limit, seconds = self.mail_limit
        now = time.monotonic()
        if now - self.mail_window[0] >= seconds:
            self.mail_window[:] = [now, 0]
        if self.mail_window[1] >= limit:
            self.throttled += 1
            return MAIL_LIMIT_REPLY
        self.mail_window[1] += 1
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        # aiosmtpd hands a UTF-8 address over as surrogate escapes of its bytes
        address = address.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
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
            if rcpt.lower() in self.hang_in_data:
                self.hang_in_data.discard(rcpt.lower())
                await asyncio.sleep(3600)  # the client gives up first
            if rcpt.lower() in self.drop_in_data:
                self.drop_in_data.discard(rcpt.lower())
                with self.lock:
                    self.dropped.append(Received(envelope.mail_from, rcpt, envelope.original_content))
                server.transport.close()  # the connection drops before the reply
                return "451 dropped"
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                if rcpt.lower() in self.data_faults:
                    return self.data_faults[rcpt.lower()]
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
        auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


class FaultySMTP(SMTP):
    """aiosmtpd's SMTP, able to answer the greeting with a fault (421, say) and hang up."""

    async def _handle_client(self) -> None:
        recorder: Recorder = self.event_handler
        with recorder.lock:
            recorder.connections += 1
            fault = recorder.greeting_faults.pop(0) if recorder.greeting_faults else None
            limit = recorder.max_connections
            if fault is None and limit is not None and recorder.open_connections >= limit:
                fault = "421 4.7.0 Error: too many connections from 127.0.0.1"
            if fault is None:
                recorder.open_connections += 1
        if fault is None:
            try:
                return await super()._handle_client()
            finally:
                with recorder.lock:
                    recorder.open_connections -= 1
        await self.push(fault)
        self.transport.close()


class FaultyController(Controller):
    def factory(self):
        return FaultySMTP(self.handler, **self.SMTP_kwargs)


class Server:
    """Start/stop an aiosmtpd server; `tls` adds STARTTLS (required) and AUTH.

    *pipelining* advertises PIPELINING; *smtputf8* (aiosmtpd's default) SMTPUTF8.
    """

    def __init__(
        self,
        tls_context=None,
        implicit_tls: bool = False,
        pipelining: bool = False,
        smtputf8: bool = True,
        port: int | None = None,
        size_limit: int | None = None,
    ) -> None:
        self.recorder = Recorder(pipelining=pipelining)
        self.port = port or free_port()
        kwargs = {}
        if implicit_tls:  # TLS from the first byte (port 465 style), then AUTH
            # aiosmtpd only counts STARTTLS as TLS for AUTH; this connection is TLS too.
            kwargs = {
                "ssl_context": tls_context,
                "authenticator": authenticator,
                "auth_required": True,
                "auth_require_tls": False,
            }
        elif tls_context is not None:
            kwargs = {
                "tls_context": tls_context,
                "require_starttls": True,
                "authenticator": authenticator,
                "auth_required": True,
            }
        kwargs["enable_SMTPUTF8"] = smtputf8
        if size_limit is not None:  # offered as SIZE (aiosmtpd's default: 32 MiB)
            kwargs["data_size_limit"] = size_limit
        self.controller = FaultyController(
            self.recorder, hostname="127.0.0.1", port=self.port, server_hostname="localhost", **kwargs
        )

    def __enter__(self) -> Server:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
