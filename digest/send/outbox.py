"""The outbox messenger: each message written as an .eml file instead of sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from ..atomic import write_atomically
from ..errors import SendError
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
        return self.folder / f"{local}_at_{domain.replace('/', '%2F')}.eml"

    def transmit(self, sender: str, recipient: str, data: bytes, done: Done) -> None:
        path = self._path(recipient)
        try:
            write_atomically({path: data})
            outcome: object = "written"
        except OSError as e:
            outcome = SendError(f"cannot write {path}: {e.strerror or e}", hint="check the outbox folder")
        asyncio.get_running_loop().call_soon(done, outcome)

    async def push(self, sender: str, recipient: str, data: Data) -> str:
        write_atomically({self._path(recipient): await _resolve(data)})
        return "written"

    async def close(self) -> None:
        pass
