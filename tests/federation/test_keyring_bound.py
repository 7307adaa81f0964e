"""The keyring's in-memory cache of other servers' keys is bounded (keys.MAX_CACHED_SERVERS): beyond it the
earliest remembered server is forgotten (its keys stay in the database and are read again when needed)."""

from __future__ import annotations

from typing import Any

from ranvier.federation.keys import Keyring
from ranvier.protocol.signing import SigningKey


def test_the_servers_remembered_are_bounded_earliest_first() -> None:
    keyring = Keyring("me.example", [SigningKey.generate("k1")], max_cached_servers=2)
    cache: dict[str, Any] = keyring._cache
    a = keyring._entry("a.example")
    keyring._entry("b.example")
    assert keyring._entry("a.example") is a  # kept while within the bound
    keyring._entry("c.example")
    assert list(cache) == ["b.example", "c.example"]
    assert keyring.lookup("a.example", "ed25519:x") is None and keyring.fetch_failure("a.example") is None
