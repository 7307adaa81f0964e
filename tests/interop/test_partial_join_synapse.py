"""Partial-state ("faster") joins between Ranvier and a real Synapse, both ways, and the join gap under
partial state (issue 19).

* Ranvier joins a Synapse 1.163.2 room with ``omit_members``: its user sees the room, sends and receives at
  once, while the resync is held back; once the resync may go on, the room stops being partial and
  ``/members`` lists everyone.
* Synapse 1.163.2 joins a Ranvier room (Synapse asks for partial state by default): the same, with the
  resync held by a proxy in front of Ranvier's federation listener.
* The gap: a message the resident sends between make_join and send_join reaches the Ranvier joiner while
  its room is still partial, through Synapse's dummy event alone (our detection off), through both, and
  against Synapse 1.155.0 (no dummy event) through our joiner-side detection alone; it is authorised against
  the partial state at the join's prev events, so no ``/state_ids`` nor ``/state`` is asked for it (the
  state there is the room's full state), and it is in a lazy-loading ``/sync`` before ``/messages``.
* Synapse as the partial joiner of a Ranvier room across a gap: our dummy event ties the join and the missed
  message; whether Synapse then shows the message is printed as an outcome (``-s``), not asserted (it is
  Synapse's to do).

How the resync is held: on the Ranvier joiner, its federation client's ``/state_ids`` and ``/state``
requests *at the join or its prev events* wait for the test (others go through, and are recorded); on
Synapse, a proxy holds every ``/state_ids`` and ``/state`` request for the room. Nothing is
answered for the servers: the real requests go out once released.

Rooms have 50 members by default, 5,000 with ``RANVIER_LONG=1`` (building a 5,000-member Synapse room
takes minutes). Timings are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from bench.partial_join import add_ranvier_members
from ranvier.app import Homeserver
from tests.ports import free_port
from tests.scenarios.servers import Client, eventually, start_server

from .delay_proxy import SEND_JOIN_PREFIX, DelayProxy
from .peers import SynapseClient, SyncReader, start_ranvier_behind
from .synapse import SynapseServer, running_synapse

LONG = os.environ.get("RANVIER_LONG") == "1"
# A 5,000-member Synapse room takes minutes to build here: past the default per-test timeout.
pytestmark = [pytest.mark.interop, *([pytest.mark.timeout(3600)] if LONG else [])]

# RANVIER_PARTIAL_MEMBERS: another size, for measuring (with RANVIER_LONG=1 for its timeouts; e.g. 1,000).
MEMBERS = int(os.environ.get("RANVIER_PARTIAL_MEMBERS", "5000" if LONG else "50"))
FED_TIMEOUT = 300.0 if LONG else 30.0
BUILD_CONCURRENCY = 4
OLD_SYNAPSE = "1.155.0"  # before Synapse's resident-side gap fix (SYNAPSE.md)
STATE_PATHS = ("/_matrix/federation/v1/state_ids/", "/_matrix/federation/v1/state/")
LAZY = '{"room":{"state":{"lazy_load_members":true}}}'


def _figure(label: str, seconds: float) -> None:
    print(f"\n[partial join] {label}: {seconds * 1000:.0f} ms")


# -- holding the resync -----------------------------------------------------------------------------------


class JoinerSpy:
    """Wraps a Ranvier server's federation client: records every send_join v2 (whether it asked for
    ``omit_members``, and the answer) and, while ``hold`` is set, makes ``/state_ids`` and ``/state``
    requests at the join event or its prev events wait until ``release()``."""

    def __init__(self, hs: Homeserver, *, hold: bool) -> None:
        self.hold = hold
        self.send_joins: list[tuple[bool, dict[str, Any]]] = []
        self.held_ids: set[str] = set()
        self.held_requests = 0
        # Every /state_ids and /state asked, as (path, event id), held or not.
        self.state_asked: list[tuple[str, Any]] = []
        self._released = asyncio.Event()
        client = hs.federation_client
        send_join_v2, request = client.send_join_v2, client.request

        async def spy_send_join(
            destination: str, room_id: str, event_id: str, event: Any, *, omit_members: bool = False
        ) -> dict[str, Any]:
            answer = await send_join_v2(destination, room_id, event_id, event, omit_members=omit_members)
            self.send_joins.append((omit_members, answer))
            # Before the answer is handed back: the resync may start as soon as the join is persisted.
            signed = answer.get("event")
            joined: dict[str, Any] = signed if isinstance(signed, dict) else dict(event)
            self.held_ids |= {event_id, *(p for p in joined.get("prev_events", []) if isinstance(p, str))}
            return answer

        async def gated_request(
            method: str, destination: str, path: str, query: Any = None, *a: Any, **k: Any
        ) -> Any:
            if path.startswith(STATE_PATHS):
                self.state_asked.append((path.split("/")[4], _event_id_of(query)))
            if self.hold and path.startswith(STATE_PATHS) and _event_id_of(query) in self.held_ids:
                self.held_requests += 1
                await self._released.wait()
            return await request(method, destination, path, query, *a, **k)

        client.send_join_v2 = spy_send_join  # type: ignore[method-assign]
        client.request = gated_request  # type: ignore[method-assign]

    def release(self) -> None:
        self._released.set()

    @property
    def asked_partial(self) -> bool:
        return (
            bool(self.send_joins)
            and self.send_joins[-1][0]
            and self.send_joins[-1][1].get("members_omitted") is True
        )


def _held(spy: JoinerSpy) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return spy.held_requests >= 1

    return check


def _proxy_held(proxy: StateHoldingProxy) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return proxy.state_held >= 1

    return check


def _event_id_of(query: Any) -> Any:
    if isinstance(query, dict):
        return query.get("event_id")
    if isinstance(query, list | tuple):
        return next((v for k, v in query if k == "event_id"), None)
    return None


class StateHoldingProxy(DelayProxy):
    """The join-gap proxy, which also records send_join's query (``omit_members``) and, while
    ``hold_state`` is set, holds the joiner's ``/state_ids`` and ``/state`` requests (its resync)."""

    def __init__(self, workdir: Path, port: int) -> None:
        super().__init__(workdir, port)
        self.hold_state = False
        self.state_held = 0
        self.send_join_queries: list[dict[str, str]] = []
        self._state_released = asyncio.Event()

    def release_state(self) -> None:
        self._state_released.set()

    async def close(self) -> None:
        self._state_released.set()
        await super().close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if request.method == "PUT" and request.path.startswith(SEND_JOIN_PREFIX):
            self.send_join_queries.append(dict(request.query))
        if self.hold_state and request.method == "GET" and request.path.startswith(STATE_PATHS):
            self.state_held += 1
            await self._state_released.wait()
        return await super()._forward(request)


# -- rooms ------------------------------------------------------------------------------------------------


_members: dict[str, list[str]] = {}


async def synapse_owner(
    session: aiohttp.ClientSession, synapse: SynapseServer, localpart: str
) -> SynapseClient:
    """A server admin of ``synapse``: it creates the room and joins the members to it (admin API)."""
    user_id, token = await asyncio.to_thread(synapse.register, localpart, admin=True)
    return SynapseClient(session, synapse, user_id, token)


async def _admin(owner: SynapseClient, method: str, path: str, body: Any) -> None:
    async with owner.session.request(
        method, owner.synapse.client_url + path, json=body, headers={"Authorization": f"Bearer {owner.token}"}
    ) as resp:
        assert resp.status in (200, 201), (path, resp.status, await resp.text())


async def synapse_room(owner: SynapseClient, name: str) -> str:
    """A public room of ``owner`` with MEMBERS more members. The members are created once per server
    without a password (the admin API; no bcrypt per user) and joined by the admin join API: real joins,
    sent by Synapse as any other."""
    room_id = await owner.create_room(name=name, topic="partial state")
    members = _members.setdefault(owner.synapse.server_name, [])
    todo = iter(range(len(members), MEMBERS))

    async def create(todo: Iterator[int]) -> None:
        for i in todo:
            user_id = f"@pj_member{i}:{owner.synapse.server_name}"
            await _admin(owner, "PUT", f"/_synapse/admin/v2/users/{quote(user_id)}", {"displayname": f"M{i}"})
            members.append(user_id)

    await asyncio.gather(*(create(todo) for _ in range(BUILD_CONCURRENCY)))
    joining = iter(members)

    async def join(joining: Iterator[str]) -> None:
        for user_id in joining:
            await _admin(owner, "POST", f"/_synapse/admin/v1/join/{quote(room_id)}", {"user_id": user_id})

    await asyncio.gather(*(join(joining) for _ in range(BUILD_CONCURRENCY)))
    await owner.send_text(room_id, "old news")
    return room_id


async def joined_count(client: Client, room_id: str) -> int:
    answer = await client.ok("GET", f"/rooms/{room_id}/members", membership="join")
    return sum(1 for e in answer["chunk"] if e["content"].get("membership") == "join")


async def lazy_sync_has_room(client: Client, room_id: str) -> bool:
    answer = await client.ok("GET", "/sync", timeout="0", filter=LAZY)
    return room_id in answer.get("rooms", {}).get("join", {})


def _in_lazy_sync(client: Client, room_id: str, text: str) -> Callable[[], Awaitable[bool]]:
    """Whether ``text`` is in the room's timeline of a lazy-loading initial /sync (which, unlike
    /messages, backfills nothing)."""

    async def check() -> bool:
        answer = await client.ok("GET", "/sync", timeout="0", filter=LAZY)
        room = answer.get("rooms", {}).get("join", {}).get(room_id)
        events = room["timeline"]["events"] if room is not None else []
        return text in [e.get("content", {}).get("body") for e in events]

    return check


def _has(client: Client, room_id: str, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return text in await client.texts(room_id)

    return check


@pytest.fixture(scope="module")
def old_synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    if os.environ.get("RANVIER_SKIP_OLD_SYNAPSE"):
        pytest.skip("RANVIER_SKIP_OLD_SYNAPSE is set")
    with running_synapse(tmp_path_factory.mktemp("synapse-old-partial"), OLD_SYNAPSE) as server:
        yield server


# -- Ranvier joins Synapse --------------------------------------------------------------------------------


async def test_ranvier_joins_a_synapse_room_with_partial_state(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    carol = await synapse_owner(session, synapse, "pj_carol_r")
    room_id = await synapse_room(carol, "partial from Synapse")
    spy = JoinerSpy(ranvier, hold=True)
    bob = await Client.register(session, ranvier, "bob")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=synapse.server_name)
    _figure(f"Ranvier /join of a {MEMBERS + 1}-member Synapse room answered", loop.time() - t0)
    assert spy.asked_partial, "the join did not ask for (or get) omit_members"
    assert await ranvier.storage.rooms.is_partial_state(room_id)

    # Usable at once, while the resync is held: in a lazy-loading /sync, sending, receiving.
    await eventually(lambda: lazy_sync_has_room(bob, room_id), timeout=FED_TIMEOUT)
    await bob.send_text(room_id, "bob under partial state")
    await eventually(_has(carol, room_id, "bob under partial state"), timeout=FED_TIMEOUT)
    await carol.send_text(room_id, "carol to the partial joiner")
    await eventually(_has(bob, room_id, "carol to the partial joiner"), timeout=FED_TIMEOUT)
    _figure("sent and received under partial state", loop.time() - t0)
    await eventually(_held(spy), timeout=FED_TIMEOUT)  # the resync did start, and waits for us
    assert await ranvier.storage.rooms.is_partial_state(room_id)

    async def counted() -> bool:
        # The summary counts the room (Synapse's GET /hierarchy, asked after the join), not the few
        # members the partial state holds.
        answer = await bob.ok("GET", "/sync", timeout="0", filter=LAZY)
        room = answer.get("rooms", {}).get("join", {}).get(room_id)
        return room is not None and room["summary"].get("m.joined_member_count") == MEMBERS + 2

    await eventually(counted, timeout=FED_TIMEOUT)
    spy.release()

    async def complete() -> bool:
        return not await ranvier.storage.rooms.is_partial_state(room_id)

    await eventually(complete, timeout=FED_TIMEOUT, interval=0.1)
    _figure("full state after the release", loop.time() - t0)
    assert await joined_count(bob, room_id) == MEMBERS + 2  # carol, the members, bob
    await bob.send_text(room_id, "bob with the full state")
    await eventually(_has(carol, room_id, "bob with the full state"), timeout=FED_TIMEOUT)


# -- Synapse joins Ranvier --------------------------------------------------------------------------------


@pytest.fixture
async def ranvier_behind_proxy(tmp_path: Path) -> AsyncIterator[tuple[Homeserver, StateHoldingProxy]]:
    proxy_port = free_port()
    proxy = StateHoldingProxy(tmp_path / "proxy", proxy_port)
    await proxy.start()
    hs = await start_ranvier_behind(tmp_path / "ranvier", f"127.0.0.1:{proxy_port}")
    proxy.upstream = f"https://127.0.0.1:{hs.ports['federation']}"
    try:
        yield hs, proxy
    finally:
        await hs.stop()
        await proxy.close()


async def test_synapse_joins_a_ranvier_room_with_partial_state(
    synapse: SynapseServer,
    ranvier_behind_proxy: tuple[Homeserver, StateHoldingProxy],
    session: aiohttp.ClientSession,
) -> None:
    ranvier, proxy = ranvier_behind_proxy
    alice = await Client.register(session, ranvier, "alice")
    room_id = await alice.create_room(name="partial from Ranvier", topic="partial state")
    await add_ranvier_members(ranvier, room_id, MEMBERS)
    await alice.send_text(room_id, "old news")
    dave = await SynapseClient.register_on(session, synapse, "pj_dave_s")
    proxy.hold_state = True
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await dave.ok("POST", f"/join/{room_id}", {}, server_name=ranvier.server_name)
    _figure(f"Synapse /join of a {MEMBERS + 1}-member Ranvier room answered", loop.time() - t0)
    assert proxy.send_join_queries and proxy.send_join_queries[-1].get("omit_members") == "true"

    lazy = SyncReader(dave, lazy_load_members=True)
    await eventually(lambda: lazy.is_joined(room_id), timeout=FED_TIMEOUT)
    await dave.send_text(room_id, "dave under partial state")
    await eventually(_has(alice, room_id, "dave under partial state"), timeout=FED_TIMEOUT)
    await alice.send_text(room_id, "alice to the partial joiner")
    await eventually(lambda: lazy.has_text(room_id, "alice to the partial joiner"), timeout=FED_TIMEOUT)
    _figure("Synapse sent and received under partial state", loop.time() - t0)
    await eventually(_proxy_held(proxy), timeout=FED_TIMEOUT)  # Synapse's resync started, and waits
    # Synapse leaves a partial-state room out of a non-lazy-loading /sync (SYNAPSE.md): printed only.
    full_sync = await dave.ok("GET", "/sync", timeout="0")
    print(f"\n[partial join] Synapse non-lazy /sync lists the partial room: "
          f"{room_id in full_sync.get('rooms', {}).get('join', {})}")  # fmt: skip

    proxy.release_state()
    # Synapse's /members waits for the full state of a partial-state room.
    assert await joined_count(dave, room_id) == MEMBERS + 2  # alice, the members, dave
    _figure("Synapse /members complete after the release", loop.time() - t0)


# -- the gap under partial state --------------------------------------------------------------------------


async def _ranvier_joins_across_a_gap(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession, label: str
) -> tuple[str, JoinerSpy]:
    """Ranvier's user joins a Synapse room with partial state, the resync held; the Synapse owner speaks
    between make_join and send_join; the message must reach the joiner while the room is partial."""
    carol = await synapse_owner(session, synapse, f"pj_gap_carol_{label}")
    room_id = await synapse_room(carol, f"partial gap {label}")
    spy = JoinerSpy(ranvier, hold=True)
    bob = await Client.register(session, ranvier, f"bob{label}")
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []

    async def message_in_the_gap(_room: str) -> None:
        await carol.send_text(room_id, "said during the handshake")
        sent_at.append(loop.time())

    ranvier.remote_membership.before_send_join = message_in_the_gap
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=synapse.server_name)
    assert spy.asked_partial, f"Synapse {synapse.version} did not answer with partial state"
    await eventually(_in_lazy_sync(bob, room_id, "said during the handshake"), timeout=FED_TIMEOUT)
    _figure(f"gap message from Synapse {synapse.version} ({label}) in /sync", loop.time() - sent_at[0])
    # The gap message continues the join's prev events, whose state is the partial state: no state was
    # asked for it (the state at the gap is the room's full state; only the held resync asks one).
    assert [a for a in spy.state_asked if a[1] not in spy.held_ids] == [], spy.state_asked
    await eventually(_has(bob, room_id, "said during the handshake"), timeout=FED_TIMEOUT)
    # /messages backfills the history before the join (and the state there) before it answers.
    _figure(f"gap message from Synapse {synapse.version} ({label}) in /messages", loop.time() - sent_at[0])
    await eventually(_held(spy), timeout=FED_TIMEOUT)
    assert await ranvier.storage.rooms.is_partial_state(room_id), "seen only after the resync"
    assert (await bob.texts(room_id)).count("said during the handshake") == 1

    spy.release()

    async def complete() -> bool:
        return not await ranvier.storage.rooms.is_partial_state(room_id)

    await eventually(complete, timeout=FED_TIMEOUT, interval=0.1)
    assert (await bob.texts(room_id)).count("said during the handshake") == 1
    assert await joined_count(bob, room_id) == MEMBERS + 2
    await bob.send_text(room_id, "bob after the gap")
    await eventually(_has(carol, room_id, "bob after the gap"), timeout=FED_TIMEOUT)
    return room_id, spy


async def _has_dummy_from(hs: Homeserver, room_id: str, server_name: str) -> bool:
    seen: set[str] = set()
    todo = list(await hs.storage.events.get_forward_extremities(room_id))
    while todo:
        event_id = todo.pop()
        if event_id not in seen:
            seen.add(event_id)
            todo.extend(await hs.storage.events.get_prev_event_ids(event_id))
    events = await hs.storage.events.get_events(sorted(seen))
    return any(
        e.type == "org.matrix.dummy_event" and e.sender.endswith(":" + server_name) for e in events.values()
    )


@pytest.mark.parametrize("gap_check", [False, True], ids=["synapse_dummy_only", "both_fixes"])
async def test_gap_under_partial_state_from_synapse(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession, gap_check: bool
) -> None:
    ranvier.remote_membership.gap_check = gap_check
    room_id, _ = await _ranvier_joins_across_a_gap(
        synapse, ranvier, session, "both" if gap_check else "dummy"
    )
    if not gap_check:
        # Only Synapse's dummy event (citing the join and the missed message) could have brought it.
        assert await _has_dummy_from(ranvier, room_id, synapse.server_name)


async def test_gap_under_partial_state_from_old_synapse(
    old_synapse: SynapseServer,
    tmp_path: Path,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ranvier = await start_server(tmp_path / "ranvier-old-peer")
    try:
        assert ranvier.remote_membership.gap_check  # Synapse 1.155 sends no dummy event: ours is all there is
        with caplog.at_level(logging.INFO, logger="ranvier.rooms.remote_join"):
            room_id, _ = await _ranvier_joins_across_a_gap(old_synapse, ranvier, session, "old")
        assert any("join gap in" in r.getMessage() for r in caplog.records)
        assert not await _has_dummy_from(ranvier, room_id, old_synapse.server_name)
    finally:
        await ranvier.stop()


async def test_synapse_partial_joiner_across_a_gap(
    synapse: SynapseServer,
    ranvier_behind_proxy: tuple[Homeserver, StateHoldingProxy],
    session: aiohttp.ClientSession,
) -> None:
    ranvier, proxy = ranvier_behind_proxy
    alice = await Client.register(session, ranvier, "alice")
    room_id = await alice.create_room(name="partial gap from Ranvier")
    await add_ranvier_members(ranvier, room_id, MEMBERS)
    await alice.send_text(room_id, "old news")
    dave = await SynapseClient.register_on(session, synapse, "pj_gap_dave")
    proxy.hold_send_join = True
    join = asyncio.create_task(dave.ok("POST", f"/join/{room_id}", {}, server_name=ranvier.server_name))
    await asyncio.wait_for(proxy.send_join_arrived.wait(), FED_TIMEOUT)
    await alice.send_text(room_id, "said during the handshake")
    proxy.release()
    await asyncio.wait_for(join, FED_TIMEOUT)
    assert proxy.send_join_queries[-1].get("omit_members") == "true"
    # Our side: the dummy event tied the join and the missed message together.
    assert len(await ranvier.storage.events.get_forward_extremities(room_id)) == 1

    # Synapse's side, recorded as an outcome: does its partial-state room show the missed message?
    lazy = SyncReader(dave, lazy_load_members=True)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    outcome = "not within the timeout"
    try:
        await eventually(lambda: _timeline_or_history(dave, lazy, room_id), timeout=FED_TIMEOUT)
        outcome = f"yes, after {(loop.time() - t0) * 1000:.0f} ms"
    except AssertionError:
        pass
    print(f"\n[partial join] Synapse {synapse.version} partial joiner shows the gap message: {outcome}")
    # The room works both ways afterwards, whatever Synapse did with the gap.
    await dave.send_text(room_id, "dave after the gap")
    await eventually(_has(alice, room_id, "dave after the gap"), timeout=FED_TIMEOUT)
    assert await joined_count(dave, room_id) == MEMBERS + 2


async def _timeline_or_history(client: SynapseClient, lazy: SyncReader, room_id: str) -> bool:
    if await lazy.has_text(room_id, "said during the handshake"):
        return True
    return "said during the handshake" in await client.texts(room_id)
