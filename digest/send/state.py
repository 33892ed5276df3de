"""Where a send keeps its state in the project's .digest/: the journal, the locks that let
one process at a time send an issue, and the logs of running sends (and their recovery
after a kill)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..config import Project
from ..errors import SendError
from .journal import Journal, JournalError

JOURNAL_NAME = "journal.sqlite3"


def open_journal(project: Project) -> Journal:
    """Open the project's send journal (and suppression list), creating it if needed."""
    return Journal(project.state_dir / JOURNAL_NAME)


def _send_name(key: str) -> str:
    return f"send-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _lock_file(project: Project, name: str) -> Path:
    return project.state_dir / "locks" / f"{name}.lock"


def _logs_dir(project: Project) -> Path:
    return project.state_dir / "send-logs"


def _lock_path(project: Project, key: str) -> Path:
    return _lock_file(project, _send_name(key))


def _log_path(project: Project, key: str) -> Path:
    """Where a running send logs its journal entries (``sendlog.py``); named as its lock."""
    return _logs_dir(project) / f"{_send_name(key)}.log"


def send_logs(project: Project, killed_only: bool = False) -> list[Path]:
    """The send logs in the project's state folder (killed sends', and a running one's; with
    *killed_only*, only those whose send's lock nobody holds)."""
    folder = _logs_dir(project)
    logs = sorted(folder.glob("send-*.log")) if folder.is_dir() else []
    return [log for log in logs if not (killed_only and _held(_lock_file(project, log.stem)))]


def _holder(lock: Path) -> str | None:
    """What a send holding *lock* now wrote in it (its pid), or None if nobody holds it (or
    there is no lock file). flock needs no write access. Raise OSError if it cannot be read."""
    try:
        f = lock.open("r")
    except FileNotFoundError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip()
    return None


def _held(lock: Path) -> bool:
    """Whether a send holds this lock now (a lock that cannot be read: no)."""
    try:
        return _holder(lock) is not None
    except OSError:
        return False


def recover_send_logs(project: Project) -> int:
    """Fold into the journal every log that a killed send left; return the entries applied.

    A log whose send still runs (its lock is held) is that send's to fold. Nothing is
    written when no send was killed.
    """
    applied = 0
    for log in send_logs(project):
        lock = _lock_file(project, log.stem)
        try:
            f = lock.open("r")  # flock needs no write access: a read-only folder still works
        except FileNotFoundError:
            f = None  # no lock file: no send could be writing this log
        except OSError as e:
            raise JournalError(
                f"cannot read the lock of a killed send: {e.strerror}",
                path=lock,
                hint="check the permissions of the project's .digest/ folder",
            ) from None
        with f or contextlib.nullcontext():
            if f is not None:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a send is running: it folds its own log
            journal = open_journal(project)
            try:
                applied += journal.recover(log)
            finally:
                journal.close()
    return applied


def sends_running(project: Project, keys: Iterable[str]) -> set[str]:
    """Return which of these sends are running now (their lock is held). Writes nothing."""
    running = set()
    for key in keys:
        try:
            _check_not_being_sent(project, key)
        except JournalError:
            raise  # the lock cannot be read: that says nothing of a running send
        except SendError:
            running.add(key)
    return running


def _being_sent(path: Path, key: str, holder: str) -> SendError:
    return SendError(
        f"{key} is being sent by another digest process" + (f" (pid {holder})" if holder.isdigit() else ""),
        path=path,
        hint="wait for it to finish ('digest status' shows its progress) or stop it; "
        "then run the same command again to resume",
    )


@contextlib.contextmanager
def only_sender(project: Project, key: str) -> Iterator[None]:
    """Hold the lock of one send (an issue to its list, or to one --to address).

    An advisory lock (flock) on a file in the state folder: the system releases it
    when the process ends, however it ends, so a killed send never leaves it taken.
    """
    path = _lock_path(project, key)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        f = path.open("a+")
    except OSError as e:
        raise JournalError(
            f"cannot write the send's lock: {e.strerror or e}",
            path=path,
            hint="check the disk and that the project's .digest/ folder is writable; nothing was sent",
        ) from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise _being_sent(path, key, f.read().strip()) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


def _check_not_being_sent(project: Project, key: str) -> None:
    """Refuse at once (before the plan is confirmed) a send that another process runs.

    Writes nothing: no lock file means nobody holds the lock. ``only_sender`` still
    decides, in ``execute``.
    """
    path = _lock_path(project, key)
    try:
        holder = _holder(path)
    except OSError as e:
        raise JournalError(
            f"cannot read the send's lock: {e.strerror or e}",
            path=path,
            hint="check the project's .digest/ folder; nothing was sent",
        ) from None
    if holder is not None:
        raise _being_sent(path, key, holder)


def _existing_journal(project: Project) -> Journal | None:
    """Open the journal for reading if it exists; planning creates nothing."""
    path = project.state_dir / JOURNAL_NAME
    return Journal(path) if path.exists() else None


def due_by_send(project: Project, issue: str) -> dict[str, int]:
    """The sends of *issue* (its list send, its --to sends) and how many of each are still due
    (pending or deferred), a killed send's log folded in first. Creates nothing."""
    recover_send_logs(project)
    journal = _existing_journal(project)
    if journal is None:
        return {}
    try:
        return {key: (c := journal.counts(key))["pending"] + c["deferred"] for key in journal.sends(issue)}
    finally:
        journal.close()


def cancel_sends(project: Project, keys: Iterable[str]) -> dict[str, int]:
    """Cancel these sends for good: what is still due of each is marked 'cancelled'; return
    how many of each. Holds every send's lock meanwhile: a running one is refused
    (SendError), and nothing is cancelled then."""
    keys = list(keys)
    with contextlib.ExitStack() as locks:
        for key in keys:
            locks.enter_context(only_sender(project, key))
        journal = open_journal(project)
        try:
            cancelled = {}
            for key in keys:
                journal.recover(_log_path(project, key))  # killed meanwhile: its last entries first
                cancelled[key] = journal.cancel(key)
            return cancelled
        finally:
            journal.close()
