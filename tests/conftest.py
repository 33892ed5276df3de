"""Fixtures: scratch newsletter projects written into tmp_path."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLE = "2021-12-31"

# `python -m digest` in a test's subprocess runs this checkout, not whatever copy is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of this repository's example newsletter (digest.toml + issues/), as cwd."""
    root = tmp_path / "news"
    root.mkdir()
    shutil.copy(REPO / "digest.toml", root / "digest.toml")
    shutil.copytree(REPO / "issues", root / "issues")
    monkeypatch.chdir(root)
    for key in [k for k in __import__("os").environ if k.startswith("DIGEST_")]:
        monkeypatch.delenv(key)
    return root


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write(path: Path, text: str) -> Path:
    """Write dedented text (creating folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def story(path: Path, title: str = "A story", body: str = "Some text.", **meta: str) -> Path:
    """Write a minimal story file."""
    lines = ["---", f"title: {title}"] + [f"{k}: {v}" for k, v in meta.items()] + ["---", body, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def small_issue(project: Path) -> Path:
    """A second issue with two plain stories."""
    folder = project / "issues" / "small"
    write(folder / "issue.toml", 'subject = "Small issue"\n')
    story(folder / "a-first.md", "First story", url="https://example.com/1", source="Example")
    story(folder / "b-second.md", "Second story")
    return folder


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--screenshots", metavar="DIR", default=None, help="save a screenshot of each preview view into DIR"
    )


# Debian's Chromium, driven by Playwright, for every browser test.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for one test module; fails (not skips) under CI=true without it."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run must install Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); runs in CI")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
