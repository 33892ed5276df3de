"""The outbox messenger: each message written as an .eml file instead of sent."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

from ..atomic import write_atomically
from ..errors import DigestError, SendError
from .transport import Data, Done, _resolve


class OutboxMessenger:
    """Write each message as an .eml file instead of sending it."""

    wire = False  # messages are written as they are stored in a file

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.server = f"outbox {folder}"

    def ready(self, callback: Callable[[Exception | None], None]) -> None:
        callback(None)

    def check_envelope(self, sender: str, recipient: str) -> None:
        pass

    def _path(self, recipient: str) -> Path:
        """``<local part>_at_<domain>.eml``; '%', '/' and '_' of the local part percent-encoded,
        so no two addresses share a file (``a/b@x`` and ``a_b@x`` once did)."""
        local, _, domain = recipient.rpartition("@")
        local = local.replace("%", "%25").replace("/", "%2F").replace("_", "%5F")
        name = f"{local}_at_{domain.replace('/', '%2F')}"
        if len(name.encode()) > 200:  # a file name is at most 255 bytes: a prefix and a hash
            digest = hashlib.sha256(recipient.encode()).hexdigest()[:16]
            name = name.encode()[:150].decode("utf-8", "ignore") + f"-{digest}"
        return self.folder / f"{name}.eml"

    def transmit(self, sender: str, recipient: str, data: bytes, done: Done) -> None:
        path = self._path(recipient)
        try:
            write_atomically({path: data})
            outcome: object = "written"
        except (OSError, DigestError) as e:
            reason = e.message if isinstance(e, DigestError) else (e.strerror or str(e))
            outcome = SendError(f"cannot write {path}: {reason}", hint="check the outbox folder")
        asyncio.get_running_loop().call_soon(done, outcome)

    async def push(self, sender: str, recipient: str, data: Data) -> str:
        write_atomically({self._path(recipient): await _resolve(data)})
        return "written"

    async def close(self) -> None:
        pass
