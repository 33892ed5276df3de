"""The wheel carries the default templates: a non-editable install works from any folder."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from .conftest import EXAMPLE, REPO


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_wheel_install_exports_from_an_empty_folder(tmp_path: Path) -> None:
    env = _clean_env()
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    # The running interpreter's packages (a virtual environment's too) provide the
    # dependencies; the wheel itself is installed here.
    site = subprocess.run(
        [bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.strip()) / "outer.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-deps", str(REPO)],
        check=True,
        capture_output=True,
        env=env,
    )
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "digest.toml", work)
    shutil.copytree(REPO / "issues", work / "issues")
    result = subprocess.run(
        [bin_dir / "digest", "export", EXAMPLE, "--out", "OUT"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    where = subprocess.run(
        [
            bin_dir / "python",
            "-c",
            "import digest.preview.server, digest.render as r; print(r.default_templates_dir())",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    assert where.startswith(str(env_dir)) and where.endswith("_templates"), where
    names = sorted(p.name for p in (work / "OUT").iterdir())
    assert names == [f"{EXAMPLE}.eml", f"{EXAMPLE}.html", f"{EXAMPLE}.txt"]
    msg = email.message_from_bytes((work / "OUT" / f"{EXAMPLE}.eml").read_bytes(), policy=email.policy.default)
    assert "We remind our readers" in msg.get_body(("html",)).get_content()
    assert sys.version_info >= (3, 11)


@pytest.mark.venv
@pytest.mark.skipif(
    not os.environ.get("CI") and not os.environ.get("DIGEST_TEST_VENV"),
    reason="installs every dependency into a fresh venv (about 90 s); runs under CI=true or DIGEST_TEST_VENV=1",
)
def test_readme_commands_in_a_fresh_virtual_environment(tmp_path: Path) -> None:
    """The README's two commands, in a venv that sees nothing but what pyproject.toml declares."""
    env = _clean_env()
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    install = subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", f"{REPO}[test]"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    # pip install . && digest export 2021-12-31
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "digest.toml", work)
    shutil.copytree(REPO / "issues", work / "issues")
    export = subprocess.run(
        [bin_dir / "digest", "export", EXAMPLE], cwd=work, capture_output=True, text=True, env=env
    )
    assert export.returncode == 0, export.stderr
    assert sorted(p.name for p in (work / "build").iterdir()) == [
        f"{EXAMPLE}.eml",
        f"{EXAMPLE}.html",
        f"{EXAMPLE}.txt",
    ]
    # pip install ".[test]" && python -m pytest: a selection that imports every test dependency
    # the suite's pure-Python tests use (hypothesis, aiosmtpd, trustme, the pipeline).
    tests = subprocess.run(
        [
            bin_dir / "python",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_headers.py",
            "tests/test_plaintext.py",
            "tests/test_cli.py",
            "tests/test_packaging.py::test_wheel_install_exports_from_an_empty_folder",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout
