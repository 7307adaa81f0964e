"""Publishing our keys and acting as a notary (S2S "Retrieving server keys"), and the version endpoint.

The key endpoints are not authenticated: anyone may ask, which is how keys bootstrap trust.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

from aiohttp import web

import ranvier
from ranvier.protocol.canonical_json import parse_json
from ranvier.protocol.errors import CanonicalJsonError
from ranvier.protocol.identifiers import is_valid_server_name
from ranvier.protocol.signing import sign_json

from .keys import Keyring
from .request_auth import json_error

# A notary fetch can fan out to many servers; bound the concurrency of one batch query.
MAX_CONCURRENT_NOTARY_FETCHES = 10
MAX_SERVERS_PER_QUERY = 200

_KEYRING = web.AppKey("ranvier_keyring", Keyring)


def add_key_routes(app: web.Application, keyring: Keyring, server_name: str) -> None:
    """Add ``/_matrix/key/v2/*`` and ``/_matrix/federation/v1/version`` to ``app``."""
    if keyring.server_name != server_name:
        raise ValueError("the keyring belongs to another server name")
    app[_KEYRING] = keyring
    app.router.add_get("/_matrix/key/v2/server", _get_server_keys)
    # The key id suffix was removed from the spec, but older servers still ask for it.
    app.router.add_get("/_matrix/key/v2/server/{keyId}", _get_server_keys)
    app.router.add_get("/_matrix/key/v2/query/{serverName}", _query_one)
    app.router.add_post("/_matrix/key/v2/query", _query_batch)
    app.router.add_get("/_matrix/federation/v1/version", _version)


async def _get_server_keys(request: web.Request) -> web.Response:
    return web.json_response(request.app[_KEYRING].own_key_response())


async def _version(request: web.Request) -> web.Response:
    return web.json_response({"server": {"name": "Ranvier", "version": ranvier.__version__}})


def _parse_min_valid(value: Any) -> int:
    """``minimum_valid_until_ts``; "If not supplied, the notary server MUST use the current time"."""
    if value is None:
        return int(time.time() * 1000)
    if type(value) is int:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise json_error(400, "M_INVALID_PARAM", "minimum_valid_until_ts must be an integer")


async def _notarise(keyring: Keyring, server: str, min_valid: int) -> list[dict[str, Any]]:
    """The origin's signed responses, each counter-signed by us (S2S "Querying Keys Through Another
    Server": the notary "must sign the keys returned by the queried server")."""
    out = []
    for response in await keyring.get_key_responses(server, min_valid):
        signed = copy.deepcopy(response)
        for key in keyring.signing_keys:
            sign_json(signed, keyring.server_name, key)
        out.append(signed)
    return out


async def _query_one(request: web.Request) -> web.Response:
    server = request.match_info["serverName"]
    if not is_valid_server_name(server):
        raise json_error(400, "M_INVALID_PARAM", "invalid server name")
    min_valid = _parse_min_valid(request.query.get("minimum_valid_until_ts"))
    keys = await _notarise(request.app[_KEYRING], server, min_valid)
    return web.json_response({"server_keys": keys})


async def _query_batch(request: web.Request) -> web.Response:
    try:
        body = parse_json(await request.read())
    except CanonicalJsonError as e:
        raise json_error(400, "M_NOT_JSON", f"request body is not JSON: {e.message}") from e
    query = body.get("server_keys") if isinstance(body, dict) else None
    if not isinstance(query, dict):
        raise json_error(400, "M_BAD_JSON", "server_keys must be an object")
    if len(query) > MAX_SERVERS_PER_QUERY:
        raise json_error(400, "M_LIMIT_EXCEEDED", f"at most {MAX_SERVERS_PER_QUERY} servers per query")
    wanted: dict[str, int] = {}
    for server, key_criteria in query.items():
        if (
            not is_valid_server_name(server)
            or not isinstance(key_criteria, dict)
            or not all(isinstance(c, dict) for c in key_criteria.values())
        ):
            raise json_error(400, "M_BAD_JSON", f"bad query for {server!r}")
        # The notary may return every key regardless of the key ids asked for; keep the strictest minimum.
        minima = [
            _parse_min_valid(c.get("minimum_valid_until_ts"))
            for c in key_criteria.values()
            if isinstance(c, dict)
        ]
        wanted[server] = max(minima) if minima else _parse_min_valid(None)
    keyring = request.app[_KEYRING]
    limit = asyncio.Semaphore(MAX_CONCURRENT_NOTARY_FETCHES)

    async def one(server: str, min_valid: int) -> list[dict[str, Any]]:
        async with limit:
            return await _notarise(keyring, server, min_valid)

    results = await asyncio.gather(*(one(s, m) for s, m in wanted.items()))
    return web.json_response({"server_keys": [r for rs in results for r in rs]})
