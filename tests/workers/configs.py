"""The homeserver.yaml of the in-process worker tests: one process's settings on PostgreSQL and Redis, and
the ``workers:`` section each test gives it."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any


def tls_paths(tmp: Path) -> dict[str, str]:
    return {"tls_certificate_path": str(tmp / "tls.crt"), "tls_private_key_path": str(tmp / "tls.key")}


def worker_config(
    tmp: Path, pg_url: str, redis_url: str, prefix: str, fed_port: int, workers: dict[str, Any]
) -> dict[str, Any]:
    """Every process reads this same config; ``workers``: its instances and shards (the secret is added)."""
    return {
        "server_name": f"127.0.0.1:{fed_port}",
        "data_dir": str(tmp),
        "signing_key_path": str(tmp / "signing.key"),
        "database": {"url": pg_url},
        "redis": {"url": redis_url, "channel_prefix": prefix},
        "listeners": {
            "client": {"bind": "127.0.0.1", "port": 0},
            "federation": {"bind": "127.0.0.1", "port": fed_port, "tls": True, **tls_paths(tmp)},
        },
        "registration": {"enabled": True},
        "federation": {"verify_tls": False, "allow_loopback": True},
        "rate_limits": {"enabled": False},
        "workers": {"secret": secrets.token_hex(16), **workers},
    }
