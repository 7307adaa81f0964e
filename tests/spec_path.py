"""Where the on-disk spec lives: ``shared/spec`` beside the checkout (as on developer machines and in CI,
which clones the repo into another folder with a copy of ``shared/`` next to it)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def spec_dir() -> Path:
    for candidate in (REPO.parent / "shared" / "spec", Path("/work/shared/spec")):
        if (candidate / "INDEX.md").exists():
            return candidate
    raise FileNotFoundError(f"the spec is not at {REPO.parent / 'shared' / 'spec'}")


SPEC = spec_dir()
