"""Bring the site folder up to date: write only what changed, atomically; drop stale files.

The folder carries a list of the files digest wrote (.digest-site.json). Only files
on that list are ever removed, so nothing else in or beside the folder is touched.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..atomic import write_atomically
from ..errors import ContentError
from .archive import SITE_MARK

log = logging.getLogger(__name__)


@dataclass
class Changes:
    """What a publish did to the folder, as site paths."""

    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0


def sync_folder(out: Path, files: dict[str, bytes]) -> Changes:
    """Make *out* hold exactly *files* (plus what digest did not write); return the changes."""
    old = _read_mark(out)
    changes = Changes()
    outputs: dict[Path, bytes] = {}
    for rel in sorted(files):
        target = out / rel
        if _same(target, files[rel]):
            changes.unchanged += 1
            continue
        outputs[target] = files[rel]
        changes.written.append(rel)
    stale = sorted(old - set(files))
    # The list first names every file this run may leave behind, so a crash loses none.
    _write_mark(out, sorted(old | set(files)))
    write_atomically(outputs)
    for rel in stale:
        target = out / rel
        if target.is_file() or target.is_symlink():
            target.unlink()
            changes.removed.append(rel)
            log.info("removed %s", target)
        _prune(target.parent, out)
    _write_mark(out, sorted(files))
    return changes


def _same(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except FileNotFoundError:
        return False
    except IsADirectoryError as e:
        raise ContentError(
            "a folder is in the way of a page", path=path, hint="remove the folder from the site folder"
        ) from e


def _read_mark(out: Path) -> set[str]:
    mark = out / SITE_MARK
    if not mark.is_file():
        return set()
    try:
        names = json.loads(mark.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise ContentError(
            f"the site's file list is damaged: {e}", path=mark, hint="delete the site folder and publish again"
        ) from e
    safe = set()
    for name in names:
        parts = PurePosixPath(str(name)).parts
        if parts and ".." not in parts and not PurePosixPath(str(name)).is_absolute():
            safe.add(str(name))
    return safe


def _write_mark(out: Path, names: list[str]) -> None:
    data = (json.dumps({"generator": "digest publish", "files": names}, indent=0) + "\n").encode()
    if not _same(out / SITE_MARK, data):
        write_atomically({out / SITE_MARK: data})


def _prune(folder: Path, out: Path) -> None:
    """Remove folders left empty, up to (not including) the site folder."""
    while folder != out and out in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
