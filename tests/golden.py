"""Compare output with golden files; UPDATE_GOLDEN=1 rewrites them on purpose."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"


def normalise_eml(data: bytes) -> bytes:
    """Blank the headers that change from run to run (Date, Message-ID, boundary)."""
    text = data.decode("ascii")
    text = re.sub(r"(?m)^Date: .*$", "Date: <date>", text)
    text = re.sub(r"(?m)^Message-ID: .*$", "Message-ID: <message-id>", text)
    boundary = re.search(r'boundary="([^"]+)"', text)
    if boundary:
        text = text.replace(boundary.group(1), "<boundary>")
    return text.encode("ascii")


def assert_golden(name: str, actual: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_bytes(actual)
        return
    expected = path.read_bytes()
    if actual != expected:
        diff = difflib.unified_diff(
            expected.decode(errors="replace").splitlines(),
            actual.decode(errors="replace").splitlines(),
            f"golden/{name}",
            "actual",
            lineterm="",
            n=2,
        )
        raise AssertionError(
            f"output differs from tests/golden/{name} "
            "(rerun with UPDATE_GOLDEN=1 if the change is intended):\n" + "\n".join(list(diff)[:80])
        )
