"""The in-memory caches' bounds come from the `caches` section of the configuration (config.Caches): the
generated file documents each key with its default, and a server started with other values uses them."""

from __future__ import annotations

from pathlib import Path

import yaml

from ranvier.app import Homeserver
from ranvier.config import Caches, parse_config, render_config
from ranvier.config_schema import as_dict
from tests.ports import free_port


def test_the_generated_config_documents_every_cache_bound_with_its_default() -> None:
    written = yaml.safe_load(render_config("example.org"))["caches"]
    assert written == as_dict(Caches())


async def test_a_server_uses_the_configured_cache_bounds(tmp_path: Path) -> None:
    fed_port = free_port()
    config = parse_config(
        {
            "server_name": f"127.0.0.1:{fed_port}",
            "data_dir": str(tmp_path),
            "signing_key_path": str(tmp_path / "signing.key"),
            "database": {"url": f"sqlite:///{tmp_path / 'homeserver.db'}"},
            "listeners": {
                "client": {"bind": "127.0.0.1", "port": 0},
                "federation": {"bind": "127.0.0.1", "port": fed_port, "tls": True},
            },
            "caches": {
                "events": 123,
                "state_entries": 5000,
                "state_res_rooms": 7,
                "sqlite_page_cache_kib": 512,
            },
        }
    )
    hs = Homeserver(config)
    await hs.start()
    try:
        storage = hs.storage
        assert storage.events._cache._max == 123
        assert storage.state_groups.cache._max == 5000
        assert storage.state_groups.meta._max == 1000
        assert hs.state._max_room_indexes == 7
        # The writer and the readers (a plain read goes to a reader, a transaction to the writer).
        assert (await storage.db.fetchall("PRAGMA cache_size"))[0][0] == -512
        async with storage.db.transaction() as txn:
            assert (await txn.fetchall("PRAGMA cache_size"))[0][0] == -512
    finally:
        await hs.stop()
