"""A private Postfix instance for the tests: its own config, queue and data in a tmp folder.

``start_postfix`` writes a main.cf and master.cf into a fresh ``/tmp/digest-postfix-*/etc``
(queue and data folders beside it; the log goes to ``tmp/postfix.log``), lists that folder
in ``alternate_config_directories`` of the machine's default main.cf (the only change made
outside the tmp folder, undone at stop), and runs ``postfix -c DIR start-fg`` as a child
process on a free loopback port. By default it relays everything to ``relay`` (an SMTP sink,
e.g. aiosmtpd); ``extra_main_cf`` and ``extra_master_cf`` adapt it (local delivery to a
Maildir, say). The machine's default instance is never started.

    with start_postfix(tmp_path, relay=("127.0.0.1", sink_port), tls=(cert, key)) as pf:
        ... send to 127.0.0.1:pf.port ...
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .system import free_port, require

DEFAULT_MAIN_CF = Path("/etc/postfix/main.cf")
SETTING = "alternate_config_directories"

# Services a relay (and local delivery) needs; chroot is off for every one ("n").
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def require_postfix() -> None:
    """Skip the test when Postfix is missing, except under CI, where that is a failure."""
    require("postfix", "postfix")


@dataclass
class Postfix:
    """A running private instance."""

    config_dir: Path
    queue_dir: Path
    port: int
    log: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def queue_is_empty(self) -> bool:
        """Return whether no message waits in the queue (active, incoming, deferred...)."""
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            folder = self.queue_dir / sub
            if folder.exists() and any(p.is_file() for p in folder.rglob("*")):
                return False
        return True

    def wait_until_empty(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.queue_is_empty():
            if time.monotonic() > deadline:
                raise AssertionError("Postfix's queue did not drain:\n" + self.log_text()[-3000:])
            time.sleep(0.1)

    def pids_of(self, program: str) -> list[int]:
        """The PIDs of this instance's processes running *program* (its qmgr, say)."""
        parents: dict[int, int] = {}
        names: dict[int, str] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            pid, rest = int(text.split(" ", 1)[0]), text.rsplit(")", 1)[1].split()
            names[pid], parents[pid] = text.split("(", 1)[1].rsplit(")", 1)[0], int(rest[1])

        def ours(pid: int) -> bool:
            while pid > 1:
                if pid == self.process.pid:
                    return True
                pid = parents.get(pid, 0)
            return False

        return [pid for pid, name in names.items() if name == program and ours(pid)]

    def postconf(self, *args: str) -> str:
        return subprocess.run(
            ["postconf", "-c", str(self.config_dir), *args], check=True, capture_output=True, text=True
        ).stdout


@contextmanager
def _locked_main_cf() -> Iterator[None]:
    """Hold an exclusive lock while the default main.cf is read and rewritten."""
    DEFAULT_MAIN_CF.parent.mkdir(parents=True, exist_ok=True)
    with open(DEFAULT_MAIN_CF.parent / ".digest-tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _edit_alternate_dirs(folder: str, add: bool) -> None:
    """Add *folder* to (or remove it from) alternate_config_directories; touch nothing else."""
    with _locked_main_cf():
        lines = DEFAULT_MAIN_CF.read_text().splitlines() if DEFAULT_MAIN_CF.exists() else []
        index = next((i for i, line in enumerate(lines) if line.split("=", 1)[0].strip() == SETTING), None)
        current = lines[index].split("=", 1)[1].replace(",", " ").split() if index is not None else []
        wanted = [d for d in current if d != folder] + ([folder] if add else [])
        line = f"{SETTING} = {' '.join(wanted)}".rstrip()
        if index is None:
            if not add:
                return
            lines.append(line)
        else:
            lines[index] = line
        if lines == [f"{SETTING} ="]:  # a main.cf made only for the tests: remove it again
            DEFAULT_MAIN_CF.unlink()
            return
        tmp = DEFAULT_MAIN_CF.with_name(".main.cf.digest-tests")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, DEFAULT_MAIN_CF)


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"Postfix exited ({process.returncode}):\n" + log.read_text(errors="replace")[-3000:]
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if s.recv(512).startswith(b"220"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                "Postfix did not answer on its port:\n" + log.read_text(errors="replace")[-3000:]
            )
        time.sleep(0.1)


@contextmanager
def start_postfix(
    tmp: Path,
    *,
    relay: tuple[str, int] | None = None,
    tls: tuple[Path, Path] | None = None,
    port: int | None = None,
    extra_main_cf: dict[str, str] | None = None,
    extra_master_cf: str = "",
    timeout: float = 30.0,
) -> Iterator[Postfix]:
    """Run a private Postfix on 127.0.0.1 (port free unless given); stop it at exit.

    *relay* (host, port) is where it sends every message (``relayhost``); *tls* is
    (certificate chain file, key file) for STARTTLS. *extra_main_cf* overrides or adds
    main.cf settings; *extra_master_cf* is appended to master.cf.
    """
    require_postfix()
    # The instance's folders: a fresh folder of the system's tmp, reachable by the postfix
    # user (pytest keeps resetting its own tmp root to 0700), removed at stop.
    base = Path(tempfile.mkdtemp(prefix="digest-postfix-"))
    base.chmod(0o711)
    config_dir, queue_dir, data_dir = base / "etc", base / "spool", base / "data"
    for folder in (config_dir, queue_dir, data_dir):
        folder.mkdir(mode=0o755)
    postfix_user = pwd.getpwnam("postfix")
    os.chown(data_dir, postfix_user.pw_uid, postfix_user.pw_gid)
    port = port or free_port()
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(queue_dir),
        "data_directory": str(data_dir),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "relay.digest-test.invalid",
        "mydomain": "digest-test.invalid",
        "mydestination": "",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "maillog_file": "/dev/stdout",
        "smtp_dns_support_level": "disabled",
        "smtp_host_lookup": "native",
        "smtpd_peername_lookup": "no",
        "biff": "no",
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
        "smtputf8_enable": "yes",
        "smtpd_client_connection_count_limit": "0",
        "smtpd_client_connection_rate_limit": "0",
        "smtp_tls_security_level": "none",
        "default_destination_concurrency_limit": "20",
        "queue_run_delay": "1s",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
    }
    if relay is not None:
        settings["relayhost"] = f"[{relay[0]}]:{relay[1]}"
    if tls is not None:
        settings.update(
            {
                "smtpd_tls_cert_file": str(tls[0]),
                "smtpd_tls_key_file": str(tls[1]),
                "smtpd_tls_security_level": "may",
                "smtpd_tls_loglevel": "1",
            }
        )
    settings.update(extra_main_cf or {})
    (config_dir / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    (config_dir / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{port}") + extra_master_cf)
    Path(tmp).mkdir(parents=True, exist_ok=True)
    log = Path(tmp) / "postfix.log"
    _edit_alternate_dirs(str(config_dir), add=True)
    process: subprocess.Popen | None = None
    try:
        with log.open("wb") as out:
            subprocess.run(
                ["postfix", "-c", str(config_dir), "set-permissions"],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
            process = subprocess.Popen(
                ["postfix", "-c", str(config_dir), "start-fg"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_for_port(port, process, log, timeout)
        yield Postfix(config_dir, queue_dir, port, log, process)
    finally:
        if process is not None:
            _stop(config_dir, process)
        _edit_alternate_dirs(str(config_dir), add=False)
        shutil.rmtree(base, ignore_errors=True)


def _stop(config_dir: Path, process: subprocess.Popen) -> None:
    """Stop the instance: 'postfix stop', then the master's PID if it lingers."""
    subprocess.run(["postfix", "-c", str(config_dir), "stop"], capture_output=True, check=False)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
