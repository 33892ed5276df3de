"""What the tests need of the machine: free loopback ports, and the system parts CI installs."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def installed(program: str) -> bool:
    return shutil.which(program) is not None or Path("/usr/sbin", program).exists()


def require(program: str, package: str) -> None:
    """Skip the test when *program* is missing or we are not root, except under CI=true,
    where that is a failure (.ci/run installs it; private instances need root)."""
    if installed(program) and os.geteuid() == 0:
        return
    why = f"{program} is not installed" if not installed(program) else f"{program} needs root"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI must install it: apt-get install {package})")
    pytest.skip(why)
