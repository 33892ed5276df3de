"""A private Dovecot IMAP server for the tests: its own config, mail and sockets under tmp.

``start_dovecot`` writes a dovecot.conf (IMAP over implicit TLS with a trustme
certificate on a free loopback port, plain IMAP that requires STARTTLS on another,
one user from a passwd-file, Maildir under tmp; with *auth_socket*, also the SASL
socket a Postfix logs its clients in through) and runs ``dovecot -F -c CONF`` as
a child process; it is stopped by its PID.
The machine's default instance is never started or touched.

    with start_dovecot(tmp_path, ca) as dc:
        ... IMAP4_SSL("127.0.0.1", dc.port) ...
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .system import free_port, require

USER, PASSWORD = "bounces", "imap-Pa55-word"

CONF = """\
instance_name = digest-test-{port}
protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:{mail}
mail_uid = {uid}
mail_gid = {gid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {base}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {starttls_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
service pop3-login {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  separator = {separator}
  prefix = {prefix}
}}
"""

# Postfix's smtpd (the postfix user) asks this socket to check a client's login (SASL).
AUTH_LISTENER = """\
service auth {{
  unix_listener {path} {{
    mode = 0666
  }}
}}
"""


def require_dovecot() -> None:
    """Skip the test when Dovecot is missing, except under CI, where that is a failure."""
    require("dovecot", "dovecot-imapd")


@dataclass
class Dovecot:
    """A running private instance with one user."""

    base: Path
    port: int
    cafile: Path
    process: subprocess.Popen
    maildir: Path
    starttls_port: int = 0  # plain IMAP that requires STARTTLS before login
    user: str = USER
    password: str = PASSWORD

    def log_text(self) -> str:
        log = self.base / "dovecot.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def environ(self, folder: str = "INBOX") -> dict[str, str]:
        """The DIGEST_IMAP_* settings that reach this server."""
        return {
            "DIGEST_IMAP_HOST": "127.0.0.1",
            "DIGEST_IMAP_PORT": str(self.port),
            "DIGEST_IMAP_USERNAME": self.user,
            "DIGEST_IMAP_PASSWORD": self.password,
            "DIGEST_IMAP_FOLDER": folder,
            "DIGEST_IMAP_CAFILE": str(self.cafile),
        }

    def connect(self):
        import imaplib

        context = ssl.create_default_context(cafile=str(self.cafile))
        imap = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=context, timeout=30)
        imap.login(self.user, self.password)
        return imap


@contextmanager
def service_tmp(prefix: str = "digest-test-") -> Iterator[Path]:
    """A folder directly under /tmp that system users (postfix, dovenull, nobody) can reach.

    pytest makes /tmp/pytest-of-<user> 0700 again whenever a session starts, which
    would lock the servers' own users out of a tmp_path mid-test; this folder is
    0711 under /tmp and removed afterwards.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o711)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"Dovecot exited ({process.returncode}):\n"
                + (log.read_text(errors="replace")[-3000:] if log.exists() else "")
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                "Dovecot did not answer on its port:\n"
                + (log.read_text(errors="replace")[-3000:] if log.exists() else "")
            )
        time.sleep(0.1)


@contextmanager
def start_dovecot(
    tmp: Path,
    ca,
    maildir: Path | None = None,
    timeout: float = 30.0,
    namespace: tuple[str, str] = ("", "/"),
    auth_socket: Path | None = None,
) -> Iterator[Dovecot]:
    """Run a private Dovecot (IMAPS on 127.0.0.1, a free port); stop it by PID at exit.

    *ca* is a ``trustme.CA``; the server's certificate is issued for 127.0.0.1. The
    user's mail is *maildir* if given (say, where a private Postfix delivers), else a
    new Maildir under tmp. *namespace* is the personal namespace's (prefix, separator):
    ``("INBOX.", ".")`` keeps every folder under INBOX, as Cyrus and Courier do.
    *auth_socket*: where Dovecot's authentication listens for a Postfix (``smtpd_sasl_type
    = dovecot``, ``smtpd_sasl_path``): its users log in to the SMTP server too.
    """
    require_dovecot()
    base = Path(tmp) / "dovecot"
    for sub in ("run", "state", "mail", "home"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(base / "server.pem"))
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    (base / "key.pem").write_bytes(cert.private_key_pem.bytes())
    (base / "cert.pem").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    # Dovecot refuses mail access as root: the mail belongs to 'nobody' under the tmp folder.
    uid, gid = (
        (os.getuid(), os.getgid())
        if os.getuid()
        else (pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    )
    os.chown(base / "mail", uid, gid)
    os.chown(base / "home", uid, gid)
    (base / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{base}/home::\n")
    port, starttls_port = free_port(), free_port()
    conf = base / "dovecot.conf"
    mail = maildir or base / "mail" / USER
    conf.write_text(
        CONF.format(
            port=port,
            base=base,
            cert=base / "cert.pem",
            key=base / "key.pem",
            uid=uid,
            gid=gid,
            mail=mail,
            starttls_port=starttls_port,
            prefix=namespace[0],
            separator=namespace[1],
        )
        + (AUTH_LISTENER.format(path=auth_socket) if auth_socket is not None else "")
    )
    # The login processes run as dovenull: let them through the tmp folders (x only).
    for parent in base.resolve().parents:
        if parent in (Path("/"), Path("/tmp")):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod((mode & 0o7777) | 0o011)
    log = base / "dovecot.log"
    process = subprocess.Popen(
        ["dovecot", "-F", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=(base / "stderr.log").open("wb"),
        start_new_session=True,
    )
    try:
        _wait_for_port(port, process, log, timeout)
        yield Dovecot(base, port, base / "ca.pem", process, mail, starttls_port)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
