"""Write a set of files all at once: temporary names first, then rename into place."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from .errors import DigestError

log = logging.getLogger(__name__)


def write_atomically(outputs: dict[Path, bytes]) -> None:
    """Write every file to a temporary name in its folder, then move them all into place.

    Nothing is replaced unless every file could be written.
    """
    staged: list[tuple[Path, Path]] = []
    mode = 0o666 & ~_umask()
    try:
        for path, data in outputs.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, mode)
            except OSError as e:
                raise DigestError(
                    f"cannot write: {e.strerror}", path=path, hint="check the folder exists and is writable"
                ) from e
            staged.append((Path(tmp), path))
        for tmp, path in staged:
            os.replace(tmp, path)
            log.info("wrote %s (%d bytes)", path, len(outputs[path]))
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
