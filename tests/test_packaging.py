"""The wheel carries the default templates: a non-editable install works from any folder."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from .conftest import EXAMPLE, REPO


def test_wheel_install_exports_from_an_empty_folder(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env_dir = tmp_path / "venv"
    # System site-packages provide the dependencies; the wheel itself is installed here.
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-deps", str(REPO)],
        check=True, capture_output=True, env=env,
    )
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "digest.toml", work)
    shutil.copytree(REPO / "issues", work / "issues")
    result = subprocess.run(
        [bin_dir / "digest", "export", EXAMPLE, "--out", "OUT"],
        cwd=work, capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stderr
    where = subprocess.run(
        [bin_dir / "python", "-c",
         "import digest.preview.server, digest.render as r; print(r.default_templates_dir())"],
        cwd=work, capture_output=True, text=True, check=True, env=env,
    ).stdout.strip()
    assert where.startswith(str(env_dir)) and where.endswith("_templates"), where
    names = sorted(p.name for p in (work / "OUT").iterdir())
    assert names == [f"{EXAMPLE}.eml", f"{EXAMPLE}.html", f"{EXAMPLE}.txt"]
    msg = email.message_from_bytes((work / "OUT" / f"{EXAMPLE}.eml").read_bytes(),
                                   policy=email.policy.default)
    assert "We remind our readers" in msg.get_body(("html",)).get_content()
    assert sys.version_info >= (3, 11)
