"""X-Matrix forgeries (S2S "Request Authentication"): a request whose Authorization header does not prove
its origin is answered 401 ``M_UNAUTHORIZED`` and nothing of it is processed.

Each case sends a ``/send`` transaction holding one valid PDU of the peer (so that processing would show)
under a forged or damaged header, and the same forgery on a read (``/state_ids``); then the room works.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ranvier.protocol.canonical_json import encode_canonical_json
from ranvier.protocol.signing import SigningKey

from .fed_harness import (
    HostileRoom,
    Peer,
    classify_status,
    path_segment,
    record,
    sign_x_matrix,
    start_hostile_room,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

CATEGORY = "X-Matrix forgeries"


@dataclass
class XRoom:
    room: HostileRoom
    other: Peer  # a server not in the room, with keys of its own


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def xr(
    tmp_path_factory: pytest.TempPathFactory, fed_session: aiohttp.ClientSession
) -> AsyncIterator[XRoom]:
    tmp = tmp_path_factory.mktemp("xmatrix")
    room = await start_hostile_room(tmp, fed_session)
    try:
        yield XRoom(room, await room.add_peer(tmp / "other"))
    finally:
        await room.close()


@dataclass
class Request:
    """What a case may forge: the headers, and what is sent (the signature is over ``signed_*``)."""

    method: str
    uri: str
    body: Any | None


# A case turns a request into the Authorization headers to send (and may change the request).
Forge = Callable[[XRoom, Request], Awaitable[list[str]]]


def _header(
    xr: XRoom,
    req: Request,
    *,
    origin: str | None = None,
    destination: str | None = "",
    key: SigningKey | None = None,
    uri: str | None = None,
    method: str | None = None,
    content: Any = ...,
    signed_destination: str | None = None,
) -> str:
    return sign_x_matrix(
        method or req.method,
        uri or req.uri,
        origin=origin or xr.room.peer.name,
        destination=xr.room.hs.server_name if destination == "" else destination,
        content=req.body if content is ... else content,
        key=key or xr.room.peer.key,
        signed_destination=signed_destination,
    )


def _params(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(" ", 1)[1].split(","):
        name, _, value = part.partition("=")
        out[name] = value.strip('"')
    return out


def _rebuild(params: dict[str, str], quote: bool = True) -> str:
    q = '"' if quote else ""
    return "X-Matrix " + ",".join(f"{k}={q}{v}{q}" for k, v in params.items())


async def _none(xr: XRoom, req: Request) -> list[str]:
    return []


async def _bearer(xr: XRoom, req: Request) -> list[str]:
    return ["Bearer abcdef"]


async def _bad_sig(xr: XRoom, req: Request) -> list[str]:
    p = _params(_header(xr, req))
    p["sig"] = base64.b64encode(secrets.token_bytes(64)).decode().rstrip("=")
    return [_rebuild(p)]


async def _sig_by_other_key_same_id(xr: XRoom, req: Request) -> list[str]:
    forger = SigningKey.generate(xr.room.peer.key.key_id.split(":", 1)[1])
    return [_header(xr, req, key=forger)]


async def _unknown_key_id(xr: XRoom, req: Request) -> list[str]:
    return [_header(xr, req, key=SigningKey.generate("unknown"))]


async def _wrong_destination(xr: XRoom, req: Request) -> list[str]:
    return [_header(xr, req, destination=xr.other.name)]


async def _destination_signed_differs(xr: XRoom, req: Request) -> list[str]:
    # The header names us, but the signature covers another destination.
    return [_header(xr, req, signed_destination=xr.other.name)]


async def _origin_mismatch(xr: XRoom, req: Request) -> list[str]:
    # Claims to be the other server, signed with the peer's key (under the peer's key id).
    return [_header(xr, req, origin=xr.other.name)]


async def _origin_is_us(xr: XRoom, req: Request) -> list[str]:
    return [_header(xr, req, origin=xr.room.hs.server_name)]


async def _origin_not_a_server_name(xr: XRoom, req: Request) -> list[str]:
    p = _params(_header(xr, req))
    p["origin"] = "not a server!"
    return [_rebuild(p)]


async def _origin_unreachable(xr: XRoom, req: Request) -> list[str]:
    # A server whose key server refuses connections: its key cannot be had.
    return [_header(xr, req, origin="127.0.0.1:1", key=SigningKey.generate("t1"))]


async def _signed_other_uri(xr: XRoom, req: Request) -> list[str]:
    return [_header(xr, req, uri=req.uri + "x")]


async def _signed_other_method(xr: XRoom, req: Request) -> list[str]:
    return [_header(xr, req, method="POST" if req.method != "POST" else "PUT")]


async def _signed_other_body(xr: XRoom, req: Request) -> list[str]:
    return [_header(xr, req, content={"pdus": [], "edus": []})]


async def _signed_without_body(xr: XRoom, req: Request) -> list[str]:
    if req.body is None:
        return [_header(xr, req, content={"x": 1})]
    return [_header(xr, req, content=None)]


async def _duplicate_param(xr: XRoom, req: Request) -> list[str]:
    header = _header(xr, req)
    return [header + f',origin="{xr.other.name}"']


async def _missing_sig(xr: XRoom, req: Request) -> list[str]:
    p = _params(_header(xr, req))
    del p["sig"]
    return [_rebuild(p)]


async def _missing_key(xr: XRoom, req: Request) -> list[str]:
    p = _params(_header(xr, req))
    del p["key"]
    return [_rebuild(p)]


async def _empty_sig(xr: XRoom, req: Request) -> list[str]:
    p = _params(_header(xr, req))
    p["sig"] = ""
    return [_rebuild(p)]


async def _huge_sig(xr: XRoom, req: Request) -> list[str]:
    p = _params(_header(xr, req))
    p["sig"] = "A" * 6000
    return [_rebuild(p)]


async def _garbage(xr: XRoom, req: Request) -> list[str]:
    return ['X-Matrix origin="unterminated']


async def _no_params(xr: XRoom, req: Request) -> list[str]:
    return ["X-Matrix"]


async def _two_bad_headers(xr: XRoom, req: Request) -> list[str]:
    return [(await _bad_sig(xr, req))[0], (await _unknown_key_id(xr, req))[0]]


async def _replayed(xr: XRoom, req: Request) -> list[str]:
    # A header captured from an earlier request to another path is replayed.
    return [_header(xr, req, uri="/_matrix/federation/v1/send/an-earlier-txn")]


# Accepted forms (the spec asks recipients to accept them).


async def _valid(xr: XRoom, req: Request) -> list[str]:
    return [_header(xr, req)]


async def _no_destination(xr: XRoom, req: Request) -> list[str]:
    # "destination" is optional on receipt, for servers older than v1.3; the signature covers us anyway.
    return [_header(xr, req, destination=None, signed_destination=xr.room.hs.server_name)]


async def _unquoted(xr: XRoom, req: Request) -> list[str]:
    return [_rebuild(_params(_header(xr, req)), quote=False)]


async def _one_bad_one_good(xr: XRoom, req: Request) -> list[str]:
    return [(await _bad_sig(xr, req))[0], _header(xr, req)]


async def _scheme_lower_case(xr: XRoom, req: Request) -> list[str]:
    return ["x-matrix" + _header(xr, req)[len("X-Matrix") :]]


@dataclass(frozen=True)
class XCase:
    name: str
    forge: Forge
    accepted: bool = False


CASES = [
    XCase("no_authorization_header", _none),
    XCase("bearer_scheme", _bearer),
    XCase("bad_signature", _bad_sig),
    XCase("signed_by_another_key_same_id", _sig_by_other_key_same_id),
    XCase("unknown_key_id", _unknown_key_id),
    XCase("wrong_destination", _wrong_destination),
    XCase("signed_for_another_destination", _destination_signed_differs),
    XCase("origin_mismatch", _origin_mismatch),
    XCase("origin_is_the_receiver", _origin_is_us),
    XCase("origin_not_a_server_name", _origin_not_a_server_name),
    XCase("origin_key_server_unreachable", _origin_unreachable),
    XCase("signed_another_uri", _signed_other_uri),
    XCase("signed_another_method", _signed_other_method),
    XCase("signed_another_body", _signed_other_body),
    XCase("signed_with_and_without_body", _signed_without_body),
    XCase("duplicate_origin_param", _duplicate_param),
    XCase("missing_sig", _missing_sig),
    XCase("missing_key", _missing_key),
    XCase("empty_sig", _empty_sig),
    XCase("huge_sig", _huge_sig),
    XCase("unterminated_quote", _garbage),
    XCase("scheme_without_params", _no_params),
    XCase("two_bad_headers", _two_bad_headers),
    XCase("replayed_from_another_request", _replayed),
    XCase("control_valid", _valid, accepted=True),
    XCase("no_destination_param", _no_destination, accepted=True),
    XCase("unquoted_values", _unquoted, accepted=True),
    XCase("one_bad_one_good_header", _one_bad_one_good, accepted=True),
    XCase("scheme_lower_case", _scheme_lower_case, accepted=True),
]


def _txn_body(xr: XRoom, pdu_json: dict[str, Any]) -> dict[str, Any]:
    return {
        "origin": xr.room.peer.name,
        "origin_server_ts": int(time.time() * 1000),
        "pdus": [pdu_json],
        "edus": [],
    }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_forged_send(xr: XRoom, case: XCase) -> None:
    room = xr.room
    pdu = await room.message(f"under {case.name}")
    req = Request("PUT", f"/_matrix/federation/v1/send/x-{case.name}", _txn_body(xr, dict(pdu.json)))
    headers = await case.forge(xr, req)
    reply = await room.request(
        req.method,
        req.uri,
        req.body,
        raw=encode_canonical_json(req.body, strict=False),
        auth=headers,
    )
    record(CATEGORY, classify_status(reply.status))
    held, _ = await room.stored(pdu.event_id)
    if case.accepted:
        assert reply.status == 200 and reply.body["pdus"] == {pdu.event_id: {}}, reply
        assert held
    else:
        assert reply.status == 401 and reply.errcode == "M_UNAUTHORIZED", reply
        assert isinstance(reply.body.get("error"), str)
        assert not held
    await room.assert_works()


READ_CASES = [c for c in CASES if c.name not in ("signed_another_body",)]


@pytest.mark.parametrize("case", READ_CASES, ids=[c.name for c in READ_CASES])
async def test_forged_read(xr: XRoom, case: XCase) -> None:
    room = xr.room
    tip = (await room.tips())[0]
    req = Request(
        "GET",
        f"/_matrix/federation/v1/state_ids/{path_segment(room.room_id)}?event_id={path_segment(tip.event_id)}",
        None,
    )
    headers = await case.forge(xr, req)
    path, _, query = req.uri.partition("?")
    reply = await room.request(req.method, path, query=query, auth=headers)
    record(CATEGORY, classify_status(reply.status))
    if case.accepted:
        assert reply.status == 200 and "pdu_ids" in reply.body, reply
    else:
        assert reply.status == 401 and reply.errcode == "M_UNAUTHORIZED", reply
        assert "pdu_ids" not in reply.body
    await room.assert_works()
