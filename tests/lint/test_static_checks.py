"""ruff (lint and format) and ``mypy --strict`` over all of ``ranvier/``, as part of the suite, so that CI
refuses a change that breaks them rather than leaving it to whoever runs them by hand next."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint() -> None:
    result = _run("ruff", "check", "ranvier", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = _run("ruff", "format", "--check", "ranvier", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_all_of_ranvier() -> None:
    # pyproject.toml's [tool.mypy] sets strict = true and files = ["ranvier"].
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
