"""Where a send keeps its state in the project's .digest/: the journal, the locks that let
one process at a time send an issue, and the logs of running sends (and their recovery
after a kill)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from .. import db
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


_RESUME_AFTER = (
    "wait for it to finish ('digest status' shows its progress) or stop it; "
    "then run the same command again to resume"
)


def running_since(project: Project, keys: Iterable[str]) -> dict[str, float]:
    """The sends among *keys* that are running now, and when each began (the time it wrote
    in its lock when it took it). What it claimed since is in flight; a 'sending' delivery
    older than that is uncertain from an earlier run. Writes nothing."""
    started = {}
    for key in keys:
        path = _lock_path(project, key)
        holder = _lock_holder(path)
        if holder is not None:
            started[key] = _started(holder, path)
    return started


def _lock_holder(path: Path) -> str | None:
    """``_holder``, with a lock that cannot be read as one clear error."""
    try:
        return _holder(path)
    except OSError as e:
        raise JournalError(
            f"cannot read the send's lock: {e.strerror or e}",
            path=path,
            hint="check the project's .digest/ folder; nothing was sent",
        ) from None


def _started(holder: str, path: Path) -> float:
    """When the send holding the lock at *path* took it: the time on its second line; for
    a lock of an older digest (its pid only), the file's time; for one being written (empty),
    now: nothing is claimed yet."""
    lines = holder.split()
    if not lines:
        return time.time()
    try:
        return float(lines[1])
    except (IndexError, ValueError):
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0


def _pid(holder: str) -> str:
    """The process id a lock's holder wrote on its first line, or ''."""
    first = holder.split()[0] if holder.split() else ""
    return first if first.isdigit() else ""


def _being_sent(path: Path, key: str, holder: str, hint: str | None = None) -> SendError:
    return SendError(
        f"{key} is being sent by another digest process" + (f" (pid {pid})" if (pid := _pid(holder)) else ""),
        path=path,
        hint=hint or _RESUME_AFTER,
    )


@contextlib.contextmanager
def only_sender(project: Project, key: str, hint: str | None = None) -> Iterator[None]:
    """Hold the lock of one send (an issue to its list, or to one --to address).

    An advisory lock (flock) on a file in the state folder: the system releases it
    when the process ends, however it ends, so a killed send never leaves it taken.
    """
    path = _lock_path(project, key)
    try:
        db.private_dir(path.parent)
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
            raise _being_sent(path, key, f.read().strip(), hint) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n{time.time()!r}\n")  # who holds it, and since when (status)
        f.flush()
        yield


def _check_not_being_sent(project: Project, key: str, hint: str | None = None) -> None:
    """Refuse at once (before the plan is confirmed) a send that another process runs.

    Writes nothing: no lock file means nobody holds the lock. ``only_sender`` still
    decides, in ``execute``.
    """
    path = _lock_path(project, key)
    holder = _lock_holder(path)
    if holder is not None:
        raise _being_sent(path, key, holder, hint)


def _existing_journal(project: Project) -> Journal | None:
    """Open the journal for reading if it exists; planning creates nothing."""
    path = project.state_dir / JOURNAL_NAME
    return Journal(path) if path.exists() else None


class Left(NamedTuple):
    """What is left of a send (``Journal.left``), and which deliveries those are."""

    counts: dict[str, int]  # due, uncertain, failed
    which: str  # Journal.left_fingerprint


def left_by_send(project: Project, issue: str) -> dict[str, Left]:
    """The sends of *issue* (its list send, its --to sends) and what is left of each, a
    killed send's log folded in first. Creates nothing."""
    recover_send_logs(project)
    journal = _existing_journal(project)
    if journal is None:
        return {}
    try:
        return {key: Left(journal.left(key), journal.left_fingerprint(key)) for key in journal.sends(issue)}
    finally:
        journal.close()


STOP_IT_FIRST = (
    "stop that send first (Ctrl-C where it runs, or kill -INT with its pid), then run digest cancel again"
)


def cancel_sends(project: Project, shown: dict[str, Left]) -> dict[str, dict[str, int]]:
    """Cancel what is left of these sends, as *shown* to the editor (``left_by_send``);
    return what was cancelled of each (``Journal.cancel``).

    Holds every send's lock meanwhile. If one is running, or what is left is not what was
    shown (a send ran meanwhile: other readers, or other states), nothing is cancelled
    (SendError).
    """
    with contextlib.ExitStack() as locks:
        for key in shown:
            locks.enter_context(only_sender(project, key, hint=STOP_IT_FIRST))
        journal = open_journal(project)
        try:
            for key in shown:
                journal.recover(_log_path(project, key))  # killed meanwhile: its last entries first
            if any(journal.left_fingerprint(key) != left.which for key, left in shown.items()):
                raise SendError(
                    "what is left of the send changed while you were asked (a send ran meanwhile); "
                    "nothing was cancelled",
                    hint="run digest cancel again to see what is left now",
                )
            return {key: journal.cancel(key) for key in shown}
        finally:
            journal.close()


def check_not_running(project: Project, keys: Iterable[str], hint: str) -> None:
    """Refuse (SendError, with *hint*) if one of these sends is running now. Writes nothing."""
    for key in keys:
        _check_not_being_sent(project, key, hint)
