"""In-process servers for the logging tests, with the listener and secret options these tests need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ranvier.app import Homeserver
from ranvier.config import parse_config
from tests.ports import free_port


async def start(data_dir: Path, *, x_forwarded: bool = False, **extra: Any) -> Homeserver:
    """A federating server on loopback (TLS on its federation listener, as peers always use https)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = parse_config(
        {
            "server_name": f"127.0.0.1:{port}",
            "data_dir": str(data_dir),
            "signing_key_path": str(data_dir / "signing.key"),
            "database": {"url": f"sqlite:///{data_dir / 'homeserver.db'}"},
            "listeners": {
                "client": {"bind": "127.0.0.1", "port": 0, "x_forwarded": x_forwarded},
                "federation": {
                    "bind": "127.0.0.1",
                    "port": port,
                    "tls": True,
                    "tls_certificate_path": str(data_dir / "tls.crt"),
                    "tls_private_key_path": str(data_dir / "tls.key"),
                },
            },
            "registration": {"enabled": True},
            "federation": {"verify_tls": False, "allow_loopback": True},
            **extra,
        }
    )
    hs = Homeserver(config)
    await hs.start()
    return hs
