"""Running a Node script that drives headless Chromium (Debian's `chromium`, npm `playwright-core`).

Scripts live in this directory (or below it) so that `import ... from "playwright-core"` resolves to
tests/browser/node_modules; they import launch() and shot() from lib.mjs. Screenshots land in
test-artifacts/browser/<name>/ at the repository root (kept by CI as artefacts, ignored by git).
Without Chromium, node or the npm registry the test is skipped with the reason printed; under CI=true
that is a failure instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

BROWSER_DIR = Path(__file__).resolve().parent
REPO = BROWSER_DIR.parent.parent
ARTIFACTS = REPO / "test-artifacts" / "browser"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run under CI: {reason}")
    pytest.skip(reason)


def chromium_path() -> str:
    """The Chromium executable, after making sure playwright-core is installed; skips (fails in CI)."""
    exe = os.environ.get("RANVIER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _unavailable("Debian's chromium is not installed (apt-get install chromium)")
    if shutil.which("node") is None or shutil.which("npm") is None:
        _unavailable("node/npm are not installed")
    wanted = json.loads((BROWSER_DIR / "package.json").read_text())["dependencies"]
    if not all((BROWSER_DIR / "node_modules" / dep).is_dir() for dep in wanted):
        proc = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"],
            cwd=BROWSER_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            _unavailable(f"npm could not install playwright-core: {proc.stderr.strip()[-500:]}")
    assert exe is not None
    return exe


def run_script(script: str, name: str, args: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
    """Runs tests/browser/<script> with ARGS (JSON) in the environment; returns the JSON object the
    script prints as its last line of stdout. Screenshots go to test-artifacts/browser/<name>/."""
    exe = chromium_path()
    artifact_dir = ARTIFACTS / name
    if artifact_dir.exists():
        shutil.rmtree(artifact_dir)
    env = dict(os.environ, CHROMIUM=exe, ARTIFACT_DIR=str(artifact_dir), ARGS=json.dumps(args))
    proc = subprocess.run(
        ["node", str(BROWSER_DIR / script)],
        cwd=BROWSER_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{script} failed ({proc.returncode}); screenshots in {artifact_dir}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return result
