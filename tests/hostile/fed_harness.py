"""The hostile federation harness: a real Ranvier, a fake remote server (the *peer*: its own signing key,
TLS, key routes) that really joins a room through make_join/send_join, and raw signed requests in which
every part can be forged (body, X-Matrix header, keys, encodings).

Every case of the corpus ends with ``HostileRoom.assert_works``: the room's members can still send and read
``/messages``, and the room state is what it was (or what the case expects it to be).

Outcomes are recorded per category (refused / accepted / 5xx) and printed at the end of the run by
``conftest.pytest_terminal_summary``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import yarl
from aiohttp import web
from unpaddedbase64 import encode_base64

from ranvier.app import Homeserver
from ranvier.federation.keys import Keyring
from ranvier.federation.x_matrix import XMatrixAuth, format_x_matrix, request_json
from ranvier.protocol.auth import auth_types_for_event
from ranvier.protocol.canonical_json import MAX_SAFE_INT, encode_canonical_json
from ranvier.protocol.events import MAX_DEPTH, Pdu, StateKey, build_event
from ranvier.protocol.hashes import compute_content_hash
from ranvier.protocol.redaction import redact_event
from ranvier.protocol.room_versions import RoomVersion
from ranvier.protocol.signing import SigningKey
from tests.federation.fedserver import start_fed_server
from tests.scenarios.inbound_driver import ClientUser, Driver, register, start_homeserver

Outcome = Literal["refused", "accepted", "5xx"]

# category -> outcome -> count, filled by the cases and printed by conftest at the end of the run.
OUTCOMES: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))


def record(category: str, outcome: Outcome) -> None:
    OUTCOMES[category][outcome] += 1


def classify_status(status: int) -> Outcome:
    if status >= 500:
        return "5xx"
    return "accepted" if 200 <= status < 300 else "refused"


def path_segment(value: str) -> str:
    return quote(value, safe="")


@dataclass
class Reply:
    status: int
    body: Any

    @property
    def errcode(self) -> str | None:
        return self.body.get("errcode") if isinstance(self.body, dict) else None


def lenient(rv: RoomVersion) -> RoomVersion:
    """``rv`` without canonical JSON's number limits: to build events a hostile server could build."""
    return dataclasses.replace(rv, strict_canonical_json=False)


def sign_x_matrix(
    method: str,
    uri: str,
    *,
    origin: str,
    destination: str | None,
    content: Any | None,
    key: SigningKey,
    signed_destination: str | None = None,
) -> str:
    """An X-Matrix header. The signature is over the lenient canonical JSON (as Synapse's canonicaljson
    encodes floats), so bodies that a strict encoder refuses can be signed too."""
    obj = request_json(method, uri, origin, signed_destination or destination or "", content)
    sig = key.sign_bytes(encode_canonical_json(obj, strict=False))
    return format_x_matrix(XMatrixAuth(origin, destination, key.key_id, sig))


@dataclass
class Peer:
    """A fake remote server: the inbound driver (key routes, /event, /get_missing_events, /state_ids), and
    canned answers a case sets per endpoint (``overrides``: endpoint name -> (status, JSON or raw bytes))
    to play a hostile server answering our fetches."""

    driver: Driver
    overrides: dict[str, tuple[int, Any]] = field(default_factory=dict)
    # Endpoint name -> an event: requests to it wait until the event is set (a hung connection).
    stalls: dict[str, asyncio.Event] = field(default_factory=dict)
    # Endpoint name -> how many more requests to it get no answer (a connection a partition broke) until
    # ``unswallow`` is set.
    swallow: dict[str, int] = field(default_factory=dict)
    unswallow: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.driver.server_name

    @property
    def key(self) -> SigningKey:
        return self.driver.fed.keyring.signing_key

    def user(self, localpart: str) -> str:
        return self.driver.user(localpart)


@dataclass
class HostileRoom:
    hs: Homeserver
    session: aiohttp.ClientSession
    alice: ClientUser  # local member (creator, power 100)
    carol: ClientUser  # local member (power 0)
    peer: Peer  # joined through make_join/send_join
    room_id: str
    rv: RoomVersion
    bob: str  # the peer's joined user
    # The room state as of the last `snapshot()`: what `assert_works` expects it to be.
    expected_state: dict[StateKey, str] = field(default_factory=dict)
    works_checks: int = 0
    others: list[Peer] = field(default_factory=list)  # more fake servers a module started

    async def add_peer(self, tmp_path: Path) -> Peer:
        peer = await start_peer(tmp_path)
        self.others.append(peer)
        return peer

    async def close(self) -> None:
        for peer in [self.peer, *self.others]:
            await peer.driver.close()
        await self.hs.stop()

    # -- requests ------------------------------------------------------------------------------------

    @property
    def fed_base(self) -> str:
        return f"https://127.0.0.1:{self.hs.ports['federation']}"

    async def request(
        self,
        method: str,
        path: str,
        body: Any | None = None,
        *,
        query: str = "",
        origin: str | None = None,
        key: SigningKey | None = None,
        raw: bytes | None = None,
        auth: str | Sequence[str] | None = None,
        sign_body: Any | None = None,
        destination: str | None = "",
    ) -> Reply:
        """A federation request signed as the peer (or ``origin`` with ``key``); ``auth`` replaces the
        header(s), ``raw`` the body bytes, ``sign_body`` what the signature covers."""
        uri = path + (("?" + query) if query else "")
        data = (
            raw if raw is not None else (None if body is None else encode_canonical_json(body, strict=False))
        )
        if auth is None:
            auth = sign_x_matrix(
                method,
                uri,
                origin=origin or self.peer.name,
                destination=self.hs.server_name if destination == "" else destination,
                content=body if sign_body is None else sign_body,
                key=key or self.peer.key,
            )
        headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
        headers += [("Authorization", a) for a in ([auth] if isinstance(auth, str) else auth)]
        async with self.session.request(
            method, yarl.URL(self.fed_base + uri, encoded=True), data=data, headers=headers, ssl=False
        ) as resp:
            text = await resp.text()
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
            return Reply(resp.status, parsed)

    async def send_txn(
        self,
        pdus: Sequence[Mapping[str, Any] | Pdu],
        edus: Sequence[Any] = (),
        *,
        origin: str | None = None,
        key: SigningKey | None = None,
        txn_id: str | None = None,
        body_origin: str | None = None,
    ) -> Reply:
        body = {
            "origin": body_origin or origin or self.peer.name,
            "origin_server_ts": int(time.time() * 1000),
            "pdus": [p.json if isinstance(p, Pdu) else p for p in pdus],
            "edus": list(edus),
        }
        txn = txn_id or secrets.token_hex(8)
        return await self.request("PUT", f"/_matrix/federation/v1/send/{txn}", body, origin=origin, key=key)

    # -- building events -----------------------------------------------------------------------------

    async def state_events(self) -> dict[StateKey, Pdu]:
        ids = await self.hs.storage.state.get_current_state_ids(self.room_id)
        events = await self.hs.storage.events.get_events(list(ids.values()))
        return {k: events[v] for k, v in ids.items()}

    async def tips(self) -> list[Pdu]:
        ids = await self.hs.storage.events.get_forward_extremities(self.room_id)
        return list((await self.hs.storage.events.get_events(ids)).values())

    async def build(
        self,
        event_type: str,
        content: dict[str, Any],
        *,
        sender: str | None = None,
        state_key: str | None = None,
        prev: Sequence[Pdu | str] | None = None,
        auth: Sequence[Pdu | str] | None = None,
        depth: int | None = None,
        key: SigningKey | None = None,
        server_name: str | None = None,
        room_id: str | None = None,
        rv: RoomVersion | None = None,
        redacts: str | None = None,
    ) -> Pdu:
        """An event signed by the peer (or ``server_name``/``key``), citing the room's current tips and
        the auth events its current state selects, unless told otherwise. Built leniently: the result
        may break the room version's rules (that is the point)."""
        sender = sender or self.bob
        room_version = rv or self.rv
        if prev is None:
            prev = await self.tips()
        if auth is None:
            state = await self.state_events()
            keys = auth_types_for_event(room_version, event_type, state_key, sender, content)
            auth = [state[k] for k in sorted(keys) if k in state]
        if depth is None:
            # Clamped as a well-behaved server does: to canonical JSON's maximum from v6, to a 64-bit
            # column's in v1-5 (a depth below a prev event's would sort the event before it in /messages).
            limit = MAX_SAFE_INT if room_version.strict_canonical_json else MAX_DEPTH
            depth = min(max((p.depth for p in prev if isinstance(p, Pdu)), default=0) + 1, limit)
        return build_event(
            room_version=lenient(room_version),
            room_id=room_id or self.room_id,
            sender=sender,
            event_type=event_type,
            content=content,
            prev_events=_refs(prev),
            auth_events=_refs(sorted(auth, key=lambda a: a.event_id if isinstance(a, Pdu) else a)),
            depth=depth,
            origin_server_ts=int(time.time() * 1000),
            server_name=server_name or self.peer.name,
            signing_key=key or self.peer.key,
            state_key=state_key,
            redacts=redacts,
        )

    def resign(
        self, d: Mapping[str, Any], key: SigningKey | None = None, server: str | None = None
    ) -> dict[str, Any]:
        """Recompute the content hash and the signature of a (mutated) PDU dict, leniently, as the peer
        (or ``server`` with ``key``) would sign it; nothing else about it is checked."""
        rv = lenient(self.rv)
        out = {k: v for k, v in d.items() if k not in ("hashes", "signatures", "unsigned")}
        out["hashes"] = {"sha256": encode_base64(compute_content_hash(out, rv))}
        redacted = redact_event(out, rv)
        redacted.pop("signatures", None)
        signer = key or self.peer.key
        signature = signer.sign_bytes(encode_canonical_json(redacted, strict=False))
        out["signatures"] = {server or self.peer.name: {signer.key_id: signature}}
        return out

    async def message(self, body: str, **kw: Any) -> Pdu:
        return await self.build("m.room.message", {"msgtype": "m.text", "body": body}, **kw)

    # -- checks --------------------------------------------------------------------------------------

    async def stored(self, event_id: str) -> tuple[bool, bool]:
        """(held, rejected) for an event id."""
        found = await self.hs.storage.events.get_events_with_verdicts([event_id])
        if event_id not in found:
            return False, False
        verdict = found[event_id][1]
        return True, verdict is not None

    async def visible_to_alice(self, event_id: str) -> bool:
        status, _ = await self.alice.call(
            "GET", f"/_matrix/client/v3/rooms/{self.room_id}/event/{path_segment(event_id)}"
        )
        return status == 200

    async def snapshot(self) -> None:
        self.expected_state = dict(await self.hs.storage.state.get_current_state_ids(self.room_id))

    async def recent_bodies(self, limit: int = 10) -> list[str]:
        status, body = await self.alice.call(
            "GET", f"/_matrix/client/v3/rooms/{self.room_id}/messages?dir=b&limit={limit}"
        )
        assert status == 200, body
        return [e["content"].get("body") for e in body["chunk"] if e["type"] == "m.room.message"]

    async def assert_works(self) -> None:
        """The room still works for its members: the state is as expected, a local member sends and reads
        back through /messages, and the peer's member still gets a message accepted."""
        self.works_checks += 1
        n = self.works_checks
        state = dict(await self.hs.storage.state.get_current_state_ids(self.room_id))
        assert state == self.expected_state, _state_diff(self.expected_state, state)
        status, body = await self.carol.call(
            "PUT",
            f"/_matrix/client/v3/rooms/{self.room_id}/send/m.room.message/w{n}-{secrets.token_hex(4)}",
            {"msgtype": "m.text", "body": f"still works {n}"},
        )
        assert status == 200, body
        peer_msg = await self.message(f"peer still works {n}")
        reply = await self.send_txn([peer_msg])
        assert reply.status == 200 and reply.body["pdus"] == {peer_msg.event_id: {}}, reply
        recent = await self.recent_bodies()
        assert f"still works {n}" in recent and f"peer still works {n}" in recent, recent


def _refs(events: Sequence[Pdu | str]) -> list[Pdu] | list[str]:
    # Pdus where we have them all (room versions 1 and 2 cite prev/auth events with their hashes).
    pdus = [e for e in events if isinstance(e, Pdu)]
    if len(pdus) == len(events):
        return pdus
    return [e.event_id if isinstance(e, Pdu) else e for e in events]


def _state_diff(expected: Mapping[StateKey, str], actual: Mapping[StateKey, str]) -> str:
    keys = sorted(set(expected) | set(actual))
    return "state changed: " + ", ".join(
        f"{k}: {expected.get(k)} -> {actual.get(k)}" for k in keys if expected.get(k) != actual.get(k)
    )


async def start_hostile_room(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    *,
    room_version: str | None = None,
    initial_state: list[dict[str, Any]] | None = None,
) -> HostileRoom:
    """A homeserver with a public room (alice creator, carol member) that the peer's user bob joins through
    make_join/send_join, as a real remote server would."""
    hs = await start_homeserver(tmp_path / "hs")
    peer = await start_peer(tmp_path / "peer")
    alice = await register(session, hs, "alice")
    carol = await register(session, hs, "carol")
    create: dict[str, Any] = {"preset": "public_chat"}
    if room_version is not None:
        create["room_version"] = room_version
    if initial_state:
        create["initial_state"] = initial_state
    status, body = await alice.call("POST", "/_matrix/client/v3/createRoom", create)
    assert status == 200, body
    room_id = body["room_id"]
    status, body = await carol.call("POST", f"/_matrix/client/v3/join/{path_segment(room_id)}", {})
    assert status == 200, body
    rv = await hs.storage.rooms.get_room_version(room_id)
    assert rv is not None
    room = HostileRoom(hs, session, alice, carol, peer, room_id, rv, peer.user("bob"))
    await join_through_make_join(room, room.bob)
    await room.snapshot()
    return room


async def start_peer(tmp_path: Path) -> Peer:
    """A fake remote server (its own key, TLS, key routes) whose answers a case can replace."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    holder: list[Peer] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        peer = holder[0]
        name = request.match_info["endpoint"]
        peer.driver.served[name] += 1
        if name in peer.stalls:
            await peer.stalls[name].wait()
        if peer.swallow.get(name, 0) > 0:
            peer.swallow[name] -= 1
            await peer.unswallow.wait()
        if name in peer.overrides:
            status, answer = peer.overrides[name]
            if isinstance(answer, bytes):
                return web.Response(status=status, body=answer, content_type="application/json")
            return web.json_response(answer, status=status)
        events = peer.driver.events
        if name == "event":
            pdu = events.get(request.match_info["rest"])
            if pdu is not None:
                return web.json_response({"origin": peer.name, "origin_server_ts": 0, "pdus": [pdu.json]})
        elif name == "get_missing_events":
            body = await request.json()
            earliest = set(body.get("earliest_events", []))
            found: list[Pdu] = []
            frontier = [
                p for e in body.get("latest_events", []) if e in events for p in events[e].prev_event_ids
            ]
            seen = set(frontier) | earliest
            while frontier and len(found) < body.get("limit", 10):
                event_id = frontier.pop(0)
                if event_id in earliest or event_id not in events:
                    continue
                found.append(events[event_id])
                for p in events[event_id].prev_event_ids:
                    if p not in seen:
                        seen.add(p)
                        frontier.append(p)
            found.sort(key=lambda p: p.depth)
            return web.json_response({"events": [p.json for p in found]})
        elif name == "state_ids":
            state = peer.driver.state_before.get(request.query.get("event_id", ""))
            if state is not None:
                return web.json_response({"pdu_ids": state, "auth_chain_ids": []})
        return web.json_response({"errcode": "M_NOT_FOUND", "error": "not here"}, status=404)

    def routes(app: web.Application, keyring: Keyring) -> None:
        app.router.add_route("*", "/_matrix/federation/v1/{endpoint}/{rest:.*}", serve)

    fed = await start_fed_server(tmp_path, routes=routes)
    peer = Peer(Driver(fed))
    holder.append(peer)
    return peer


async def membership_handshake(
    room: HostileRoom, user_id: str, membership: str, peer: Peer | None = None
) -> Pdu:
    """make_join/send_join (or make_leave/send_leave), signing the template as ``peer``: the peer's user
    joins (leaves) for real."""
    peer = peer or room.peer
    room_q = path_segment(room.room_id)
    made = await room.request(
        "GET",
        f"/_matrix/federation/v1/make_{membership}/{room_q}/{path_segment(user_id)}",
        query="ver=" + "&ver=".join(str(v) for v in range(1, 13)) if membership == "join" else "",
        origin=peer.name,
        key=peer.key,
    )
    assert made.status == 200, made
    template = made.body["event"]
    # Cite the template's events as Pdus (v1-v2 references carry their hashes).
    prev_ids = [r[0] if isinstance(r, list) else r for r in template["prev_events"]]
    auth_ids = [r[0] if isinstance(r, list) else r for r in template["auth_events"]]
    held = await room.hs.storage.events.get_events([*prev_ids, *auth_ids])
    event = build_event(
        room_version=room.rv,
        room_id=room.room_id,
        sender=user_id,
        event_type="m.room.member",
        content=template["content"],
        prev_events=[held[e] for e in prev_ids],
        auth_events=[held[e] for e in auth_ids],
        depth=template["depth"],
        origin_server_ts=int(time.time() * 1000),
        server_name=peer.name,
        signing_key=peer.key,
        state_key=user_id,
    )
    sent = await room.request(
        "PUT",
        f"/_matrix/federation/v2/send_{membership}/{room_q}/{path_segment(event.event_id)}",
        event.json,
        origin=peer.name,
        key=peer.key,
    )
    assert sent.status == 200, sent
    return event


async def join_through_make_join(room: HostileRoom, user_id: str, peer: Peer | None = None) -> Pdu:
    return await membership_handshake(room, user_id, "join", peer)
