"""ruff and mypy are part of the test command: a lint or type error fails the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "voprd", "tests", "bench", "examples"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "voprd"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ci_has_every_tool_the_skippable_tests_need() -> None:
    """Some tests skip on a laptop without Chromium, systemd-analyze, checkov's venv, the sandbox
    or the shared data; under CI (.ci/run installs them all) none of them may be skipped."""
    if not os.environ.get("CI"):
        pytest.skip("only enforced under CI=true")
    from tests import unit_sandbox
    from tests.check_support import shared_data_dir
    from tests.report_browser import chromium_path

    missing = []
    if chromium_path() is None:
        missing.append("chromium")
    if shutil.which("systemd-analyze") is None:
        missing.append("systemd-analyze")
    if not (ROOT / ".venv-checkov" / "bin" / "checkov").exists():
        missing.append(".venv-checkov/bin/checkov")
    if unit_sandbox.unavailable() is not None:
        missing.append(f"unit sandbox: {unit_sandbox.unavailable()}")
    if not (shared_data_dir() / "expected.csv").exists():
        missing.append(f"shared data at {shared_data_dir()}")
    assert not missing, missing
