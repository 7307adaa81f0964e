"""An idle single-process server on SQLite does not import the packages only some servers need (issue 21:
idle RSS). Each is imported where it is used; importing one at module level again would cost every server
its memory (measured with ``python3 -m bench memory``): asyncpg (PostgreSQL only), cryptography (generating a
self-signed certificate), Pillow (thumbnails), redis (workers), dnspython (the first SRV lookup of a named
peer: about 3 MB). pydantic is not used at all any more: it read the configuration, and with the validators
it built cost every process about 7 MB (ranvier/config_schema.py reads it now)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAZY = ("asyncpg", "cryptography", "PIL", "redis", "dns", "pydantic")


def test_the_application_imports_none_of_the_optional_packages() -> None:
    probe = (
        "import json, sys; import ranvier.app, ranvier.cli; "
        f"print(json.dumps(sorted(m for m in {list(LAZY)!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
