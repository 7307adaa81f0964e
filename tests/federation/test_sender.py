"""The outbound federation sender against a real HTTPS ``/send/{txnId}`` endpoint on 127.0.0.1, over real
SQLite storage, with events persisted through the real room persister (the sender is its listener)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ranvier.federation import sender as sender_module
from ranvier.federation.client import FederationClient
from ranvier.federation.edus import typing_edu
from ranvier.federation.ip_blocklist import IpBlocklist
from ranvier.federation.sender import FederationSender
from ranvier.federation.tls import generate_self_signed_cert, server_ssl_context
from ranvier.federation.x_matrix import parse_x_matrix, verify_request
from ranvier.metrics import Metrics
from ranvier.protocol.events import Pdu, VerifyKeyInfo, build_event
from ranvier.protocol.room_versions import get_room_version
from ranvier.protocol.signing import SigningKey
from ranvier.rooms.persister import EventPersister
from ranvier.rooms.state import StateService
from ranvier.storage import open_storage
from ranvier.storage.interfaces import EventToPersist
from ranvier.storage.sql.outbox import RetryState
from tests.ports import free_port

OURS = "ours.test"
ALICE = f"@alice:{OURS}"
KEY = SigningKey.generate("t1")
V11 = get_room_version("11")


# -- storage ---------------------------------------------------------------------------------------------


async def open_test_storage(path: Path) -> Any:
    return await open_storage(f"sqlite:///{path}")


async def close_storage(storage: Any) -> None:
    await storage.db.close()


# -- the remote server -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    generate_self_signed_cert(d / "c.pem", d / "k.pem")
    return d / "c.pem", d / "k.pem"


@dataclass
class Remote:
    """A destination's ``PUT /_matrix/federation/v1/send/{txnId}``, checking our X-Matrix signature.

    ``fail_with`` makes it answer that status; ``gate``, while clear, holds every request open;
    ``swallow`` requests more are never answered at all. Accepted transactions are deduplicated by id as a
    real receiver does."""

    cert: tuple[Path, Path]
    port: int = field(default_factory=free_port)
    fail_with: int | None = None
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    reject: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)  # txn ids in arrival order, failed ones included
    accepted: dict[str, list[str]] = field(default_factory=dict)  # txn id -> event ids, in order
    edus: list[dict[str, Any]] = field(default_factory=list)
    swallow: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    bad_auth: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self.gate.set()

    @property
    def server_name(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def delivered(self) -> list[str]:
        return [e for ids in self.accepted.values() for e in ids]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/_matrix/federation/v1/send/{txn_id}", self._send)
        # A short shutdown: a swallowed request never finishes, and cleanup would wait the default minute.
        self.runner = web.AppRunner(app, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=server_ssl_context(*self.cert))
        await site.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _send(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            txn_id = request.match_info["txn_id"]
            self.requests.append(txn_id)
            body = await request.json()
            self._check_auth(request, body)
            if self.swallow > 0:
                self.swallow -= 1
                await asyncio.Event().wait()  # as a connection whose bytes a dead link swallowed
            await self.gate.wait()
            if self.fail_with is not None:
                return web.json_response({"errcode": "M_UNKNOWN", "error": "down"}, status=self.fail_with)
            assert body["origin"] == OURS and len(body["pdus"]) <= 50 and len(body["edus"]) <= 100
            ids = [Pdu(p, V11).event_id for p in body["pdus"]]
            if txn_id not in self.accepted:
                self.accepted[txn_id] = ids
                self.edus.extend(body["edus"])
            results = {e: ({"error": "not allowed"} if e in self.reject else {}) for e in ids}
            return web.json_response({"pdus": results})
        finally:
            self.in_flight -= 1

    def _check_auth(self, request: web.Request, body: Any) -> None:
        try:
            verify_request(
                parse_x_matrix(request.headers["Authorization"]),
                method="PUT",
                uri=request.raw_path,
                content=body,
                our_server_name=self.server_name,
                lookup=lambda server, key_id: (
                    VerifyKeyInfo(KEY.verify_key, None) if (server, key_id) == (OURS, KEY.key_id) else None
                ),
                now_ms=int(time.time() * 1000),
            )
        except Exception as e:
            self.bad_auth.append(repr(e))


# -- rooms -----------------------------------------------------------------------------------------------


class Room:
    """A v11 room persisted through the real persister; ``send`` extends the DAG (linearly by default)."""

    def __init__(self, persister: EventPersister, name: str) -> None:
        self.persister = persister
        self.room_id = f"!{name}:{OURS}"
        self.state: dict[tuple[str, str], str] = {}
        self.tip: list[str] = []
        self.ts = 1_700_000_000_000

    async def send(
        self,
        sender: str,
        etype: str = "m.room.message",
        content: dict[str, Any] | None = None,
        state_key: str | None = None,
        prev: list[str] | None = None,
    ) -> str:
        self.ts += 1
        auth = [self.state[k] for k in (("m.room.create", ""), ("m.room.member", sender)) if k in self.state]
        pdu = build_event(
            room_version=V11,
            room_id=self.room_id,
            sender=sender,
            event_type=etype,
            content={"body": "hi"} if content is None else content,
            prev_events=self.tip if prev is None else prev,
            auth_events=auth,
            depth=self.ts - 1_700_000_000_000,
            origin_server_ts=self.ts,
            server_name=sender.partition(":")[2],
            signing_key=KEY,
            state_key=state_key,
        )
        async with self.persister.room_lock(self.room_id):
            await self.persister.persist(
                self.room_id, V11, [EventToPersist(pdu, state_before=dict(self.state))]
            )
        if state_key is not None:
            self.state[(etype, state_key)] = pdu.event_id
        if prev is None:
            self.tip = [pdu.event_id]
        return pdu.event_id

    async def messages(self, n: int) -> list[str]:
        return [await self.send(ALICE, content={"body": str(i)}) for i in range(n)]


async def shared_room(storage: Any, persister: EventPersister, name: str, *remotes: Remote) -> Room:
    """Alice (ours) created the room; one user of each remote has joined."""
    await storage.rooms.store_room(f"!{name}:{OURS}", "11", ALICE)
    room = Room(persister, name)
    await room.send(ALICE, "m.room.create", {"room_version": "11"}, state_key="")
    await room.send(ALICE, "m.room.member", {"membership": "join"}, state_key=ALICE)
    for remote in remotes:
        bob = f"@bob:{remote.server_name}"
        await room.send(bob, "m.room.member", {"membership": "join"}, state_key=bob)
    return room


# -- harness ---------------------------------------------------------------------------------------------


@dataclass
class Node:
    """Our server's side: storage, the persister with the sender as its listener, the client."""

    path: Path
    storage: Any = None
    persister: EventPersister | None = None
    client: FederationClient | None = None
    sender: FederationSender | None = None

    async def open(self, **sender_args: Any) -> FederationSender:
        self.storage = await open_test_storage(self.path)
        self.persister = EventPersister(self.storage, StateService(self.storage))
        self.client = FederationClient(
            OURS, KEY, verify_tls=False, blocklist=IpBlocklist(allow_loopback=True), default_timeout=10
        )
        args = {"initial_backoff": 0.05, "max_backoff": 0.2, "restart_retry_delay": 0.05, **sender_args}
        self.sender = FederationSender(self.storage, self.client, OURS, **args)
        self.persister.add_txn_hook(self.sender.enqueue_in_txn)
        self.persister.add_listener(self.sender.on_persisted)
        return self.sender

    async def close(self) -> None:
        if self.sender is not None:
            await self.sender.stop()
        if self.client is not None:
            await self.client.close()
        if self.storage is not None:
            await close_storage(self.storage)
        self.storage = self.sender = self.client = None


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = Node(tmp_path / "ours.db")
    yield n
    await n.close()


@pytest.fixture
async def remotes(cert_pair: tuple[Path, Path]) -> AsyncIterator[Callable[[], Remote]]:
    made: list[Remote] = []

    def make() -> Remote:
        made.append(Remote(cert_pair))
        return made[-1]

    yield make
    for r in made:
        r.gate.set()
        await r.stop()


async def eventually(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# -- tests -----------------------------------------------------------------------------------------------


async def test_backlog_goes_out_in_transactions_of_at_most_50(
    node: Node, remotes: Callable[[], Remote]
) -> None:
    remote = remotes()
    await remote.start()
    metrics = Metrics()
    sender = await node.open(metrics=metrics)
    room = await shared_room(node.storage, node.persister, "big", remote)
    ids = await room.messages(120)
    # Queued durably by the listener before the sender even runs; the joins and create are not ours to send
    # (create and Alice's join predate Bob, Bob's join is his server's).
    assert await node.storage.outbox.pending_count(remote.server_name) == 120
    remote.reject.add(ids[3])  # a per-PDU error in a 200 still acknowledges the transaction

    await sender.start()
    await eventually(lambda: len(remote.delivered) >= 120, "all 120 PDUs")
    await eventually(lambda: sender.is_idle(remote.server_name), "the worker to finish")

    assert remote.delivered == ids  # in order, each exactly once
    assert [len(v) for v in remote.accepted.values()] == [50, 50, 20]
    assert len(set(remote.requests)) == len(remote.requests) == 3  # fresh id per transaction, no retries
    assert remote.bad_auth == []
    assert await node.storage.outbox.pending_count(remote.server_name) == 0
    gauge = metrics.registry.get_sample_value(
        "ranvier_federation_queue_depth", {"destination": remote.server_name}
    )
    assert gauge == 0


async def test_down_then_up_gets_everything_retrying_the_same_transaction(
    node: Node, remotes: Callable[[], Remote]
) -> None:
    remote = remotes()  # not listening yet: connections are refused
    sender = await node.open()
    await sender.start()
    room = await shared_room(node.storage, node.persister, "down", remote)
    ids = await room.messages(30)
    await sender.send_edu(remote.server_name, "m.typing", {"room_id": room.room_id, "typing": True})

    async def failures() -> int:
        retry = await node.storage.outbox.get_retry(remote.server_name)
        return 0 if retry is None else retry.failure_count

    await eventually(lambda: _ge(failures(), 2), "back-off after refused connections")
    remote.fail_with = 500
    await remote.start()
    await eventually(lambda: len(remote.requests) >= 2, "retries answered with 500")
    remote.fail_with = None
    await eventually(lambda: len(remote.delivered) == 30 and remote.edus, "everything delivered")
    await eventually(lambda: sender.is_idle(remote.server_name), "the worker to finish")

    assert sorted(remote.delivered) == sorted(ids) and len(remote.delivered) == 30
    # S2S /send: retry a transaction until it gets a 200 before sending one with another id.
    first_ok = next(iter(remote.accepted))
    assert remote.requests[: remote.requests.index(first_ok)] == [first_ok] * remote.requests.index(first_ok)
    assert [e["edu_type"] for e in remote.edus] == ["m.typing"]
    assert await node.storage.outbox.get_retry(remote.server_name) is None  # success clears the back-off
    assert await node.storage.outbox.pending_count(remote.server_name) == 0


async def _ge(value: Any, n: int) -> bool:
    return bool(await value >= n)


async def test_restart_sends_what_was_queued_and_respects_but_shortens_the_back_off(
    node: Node, remotes: Callable[[], Remote]
) -> None:
    remote = remotes()
    remote.fail_with = 503
    await remote.start()
    sender = await node.open(initial_backoff=600, max_backoff=3600)
    await sender.start()
    room = await shared_room(node.storage, node.persister, "restart", remote)
    ids = await room.messages(10)
    edu = typing_edu(room.room_id, ALICE, True)
    await sender.broadcast_edu([remote.server_name, OURS], edu)
    await eventually(lambda: remote.requests, "a failed attempt")
    await eventually(lambda: node.storage.outbox.get_retry(remote.server_name), "persisted back-off")
    await node.close()  # the worker is asleep for 600 s: stop cancels it

    remote.fail_with = None
    sender = await node.open(initial_backoff=600, max_backoff=3600, restart_retry_delay=0.1)
    retry = await node.storage.outbox.get_retry(remote.server_name)
    assert retry is not None and retry.retry_interval == 600_000
    assert await node.storage.outbox.pending_count(remote.server_name) == 11
    await sender.start()
    await eventually(lambda: len(remote.delivered) == 10 and remote.edus, "the queue sent after restart")
    await eventually(lambda: sender.is_idle(remote.server_name), "the worker to finish")
    assert sorted(remote.delivered) == sorted(ids)
    assert remote.edus == [{"edu_type": "m.typing", "content": edu.content}]
    assert await node.storage.outbox.get_retry(remote.server_name) is None


async def test_one_transaction_in_flight_per_destination(
    node: Node, remotes: Callable[[], Remote], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A transaction long without an answer is repeated on a second connection (same id: see
    # test_sender_backoff); here the remote holds requests on purpose, so no repeat is wanted.
    monkeypatch.setattr(sender_module, "HEDGE_AFTER_SECONDS", 3600.0)
    a, b = remotes(), remotes()
    for r in (a, b):
        r.gate.clear()
        await r.start()
    sender = await node.open()
    await sender.start()
    room = await shared_room(node.storage, node.persister, "flight", a, b)
    ids = await room.messages(1)
    # Both destinations have a transaction held open: they do not wait for each other.
    await eventually(lambda: a.in_flight == 1 and b.in_flight == 1, "one request at each destination")
    ids += await room.messages(70)  # each persist wakes both workers again
    for _ in range(5):
        sender.wake(a.server_name)
        await asyncio.sleep(0.05)
    assert a.in_flight == 1 and b.in_flight == 1
    a.gate.set()
    b.gate.set()
    for r in (a, b):
        await eventually(lambda r=r: len(r.delivered) == 71, f"everything at {r.server_name}")
        assert r.delivered == ids
        assert r.max_in_flight == 1


async def test_catch_up_sends_newest_per_room_and_drops_only_what_the_peer_can_pull(
    node: Node, remotes: Callable[[], Remote]
) -> None:
    remote = remotes()
    await remote.start()
    sender = await node.open(catchup_keep_per_room=20)
    big = await shared_room(node.storage, node.persister, "catchup", remote)
    # A side branch off Bob's join that no later event cites: not reachable from the newest events, so a
    # peer could not fetch it with /get_missing_events; it must stay queued.
    side = await big.send(ALICE, content={"body": "side"}, prev=list(big.tip))
    chain = await big.messages(60)
    small = await shared_room(node.storage, node.persister, "small", remote)
    few = await small.messages(5)
    # An outage recorded before this (re)start: the first send is a catch-up.
    await node.storage.outbox.set_retry(remote.server_name, RetryState(int(time.time() * 1000), 100, 3))

    await sender.start()
    await eventually(lambda: sender.is_idle(remote.server_name) and remote.accepted, "the catch-up")
    assert sorted(remote.delivered) == sorted([side, *chain[-20:], *few])
    assert await node.storage.outbox.pending_count(remote.server_name) == 0

    # Healthy again: a later backlog is not thinned out.
    more = await big.messages(30)
    await eventually(lambda: set(more) <= set(remote.delivered), "the next events")


async def test_stop_with_a_transaction_in_flight_loses_nothing(
    node: Node, remotes: Callable[[], Remote]
) -> None:
    remote = remotes()
    remote.gate.clear()
    await remote.start()
    sender = await node.open()
    await sender.start()
    room = await shared_room(node.storage, node.persister, "stop", remote)
    ids = await room.messages(5)
    await eventually(lambda: remote.in_flight == 1, "a transaction held open by the remote")
    await node.close()  # cancels the request; nothing was acknowledged
    assert remote.accepted == {}

    remote.gate.set()
    sender = await node.open()
    assert await node.storage.outbox.pending_count(remote.server_name) == 5
    await sender.start()
    await eventually(lambda: set(remote.delivered) == set(ids), "the queue sent by the new sender")
    await eventually(lambda: sender.is_idle(remote.server_name), "the worker to finish")
    assert await node.storage.outbox.pending_count(remote.server_name) == 0


async def test_destinations_kicked_servers_and_events_handed_on(
    node: Node, remotes: Callable[[], Remote]
) -> None:
    a, b = remotes(), remotes()
    for r in (a, b):
        await r.start()
    sender = await node.open()
    await sender.start()
    room = await shared_room(node.storage, node.persister, "members", a)
    # Carol of b joins through our send_join: not ours, so the listener does not queue it; the room layer
    # hands it on to the room's other servers.
    carol = f"@carol:{b.server_name}"
    join = await room.send(carol, "m.room.member", {"membership": "join"}, state_key=carol)
    await sender.send_pdu_to([a.server_name, OURS], join, room.room_id)
    # Alice kicks Bob, a's only user: a is no longer joined after the kick, but is its target's server.
    bob = f"@bob:{a.server_name}"
    kick = await room.send(ALICE, "m.room.member", {"membership": "leave"}, state_key=bob)
    after = await room.send(ALICE, content={"body": "after the kick"})

    await eventually(lambda: set(b.delivered) == {kick, after}, "b gets what follows its join")
    await eventually(lambda: set(a.delivered) == {join, kick}, "a gets the join and its kick")
    for r in (a, b):
        await eventually(lambda r=r: sender.is_idle(r.server_name), "the workers to finish")
    assert after not in a.delivered and join not in b.delivered
    assert await node.storage.outbox.destinations_with_pending() == []
