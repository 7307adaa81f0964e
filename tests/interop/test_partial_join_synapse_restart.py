"""A partial-state joiner killed with SIGKILL in the middle of its resync, and restarted over the same data,
with a real Synapse 1.163.2 on the other side (issue 19: "kill -9 of the joiner during the resync and
restart", Ranvier <-> Synapse both ways).

* Ranvier (a real ``python -m ranvier run`` process) joins a Synapse room with partial state; its resync's
  ``/state`` request (the members, after the ``/state_ids`` answer it keeps) is held by a proxy in front of
  Synapse's federation listener; Ranvier is killed while it waits, started again, and must resume: the room
  completes, ``/members`` lists everyone, the messages of before the kill are still there both ways, and
  nothing was fetched twice that need not be (``/state_ids`` once over both runs, no ``/event`` twice, no
  second join).
* Synapse joins a Ranvier room with partial state; its resync is held by a proxy in front of Ranvier's
  federation listener (``StateHoldingProxy``); Synapse is killed with SIGKILL while it waits, started again
  over the same data, and resumes its resync against our resident: its ``/members`` lists everyone.

Nothing is answered for the servers: the proxies only delay the real requests (the held one is dropped with
the killed process). Rooms have 50 members by default, 5,000 with ``RANVIER_LONG=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import pytest
import yaml
from aiohttp import web

from bench.partial_join import add_ranvier_members
from ranvier.app import Homeserver
from tests.e2e.ranvier_process import RanvierProcess
from tests.ports import free_port
from tests.scenarios.servers import Client, eventually
from tests.workers.target import workers_target

from .delay_proxy import DelayProxy
from .peers import SynapseClient, SyncReader, start_ranvier_behind
from .synapse import DEFAULT_VERSION, SynapseServer, ensure_synapse
from .test_partial_join_synapse import (
    FED_TIMEOUT,
    LONG,
    MEMBERS,
    StateHoldingProxy,
    joined_count,
    synapse_owner,
    synapse_room,
)

pytestmark = [pytest.mark.interop, *([pytest.mark.timeout(3600)] if LONG else [])]

STATE_IDS = "/_matrix/federation/v1/state_ids/"
STATE = "/_matrix/federation/v1/state/"
EVENT = "/_matrix/federation/v1/event/"
SEND_JOIN = "/_matrix/federation/v2/send_join/"


def _figure(label: str, seconds: float) -> None:
    print(f"\n[partial join restart] {label}: {seconds * 1000:.0f} ms")


def _has(client: Client, room_id: str, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return text in await client.texts(room_id)

    return check


# -- Synapse behind a proxy that sees (and may hold) what the joiner asks of it ----------------------------


@dataclass
class ProxiedSynapse(SynapseServer):
    """A Synapse named ``127.0.0.1:<federation_port>`` (where the proxy listens) whose federation listener
    is on ``listen_port``: every federation request to it goes through the proxy."""

    listen_port: int = field(default_factory=free_port)

    def configure(self) -> None:
        super().configure()
        extra_path = self.workdir / "extra.yaml"
        extra = yaml.safe_load(extra_path.read_text())
        (federation,) = (lst for lst in extra["listeners"] if lst["tls"])
        federation["port"] = self.listen_port
        extra_path.write_text(yaml.safe_dump(extra))


class RecordingProxy(DelayProxy):
    """Forwards everything to Synapse; records each request's method, path and query and, while ``hold_state``
    is set, holds the ``/state`` requests (the members a partial-state joiner fetches in its resync)."""

    def __init__(self, workdir: Path, port: int) -> None:
        super().__init__(workdir, port)
        self.requests: list[tuple[str, str]] = []
        self.hold_state = False
        self.state_held = asyncio.Event()
        self._state_released = asyncio.Event()

    def release_state(self) -> None:
        self._state_released.set()

    async def close(self) -> None:
        self._state_released.set()
        await super().close()

    def asked(self, prefix: str, *parts: str) -> list[str]:
        """The paths and queries asked under ``prefix`` that hold each of ``parts``, in order."""
        return [p for m, p in self.requests if p.startswith(prefix) and all(x in p for x in parts)]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, unquote(request.path_qs)))
        if self.hold_state and request.method == "GET" and request.path.startswith(STATE):
            self.state_held.set()
            await self._state_released.wait()
        return await super()._forward(request)


@pytest.fixture
async def proxied_synapse(tmp_path: Path) -> AsyncIterator[tuple[ProxiedSynapse, RecordingProxy]]:
    python = await asyncio.to_thread(ensure_synapse, DEFAULT_VERSION)
    synapse = ProxiedSynapse(version=DEFAULT_VERSION, workdir=tmp_path / "synapse", python=python)
    proxy = RecordingProxy(tmp_path / "proxy", synapse.federation_port)
    proxy.upstream = f"https://127.0.0.1:{synapse.listen_port}"
    await proxy.start()
    try:
        await asyncio.to_thread(synapse.configure)
        await asyncio.to_thread(synapse.start)
        yield synapse, proxy
    finally:
        await asyncio.to_thread(synapse.stop)
        await proxy.close()


class ProcessClient(Client):
    """The scenario ``Client`` pointed at a Ranvier subprocess."""

    def __init__(self, session: aiohttp.ClientSession, process: RanvierProcess, user_id: str, token: str):
        self.session = session
        self.user_id = user_id
        self.token = token
        self.base = f"{process.client_url}/_matrix/client/v3"
        self.since: str | None = None

    @classmethod
    async def register_on(
        cls, session: aiohttp.ClientSession, process: RanvierProcess, name: str
    ) -> ProcessClient:
        async with session.post(
            f"{process.client_url}/_matrix/client/v3/register",
            json={"username": name, "password": "pw-" + name * 3, "auth": {"type": "m.login.dummy"}},
        ) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        return cls(session, process, body["user_id"], body["access_token"])


def _sigkill(proc: Any) -> None:
    proc.kill()  # SIGKILL: no shutdown, no flush beyond what was committed
    proc.wait()


# -- Ranvier, the joiner, killed mid-resync ---------------------------------------------------------------


async def test_ranvier_joiner_killed_mid_resync_resumes_against_synapse(
    proxied_synapse: tuple[ProxiedSynapse, RecordingProxy], tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    if workers_target():
        pytest.skip("kills the joiner's single process (RANVIER_TARGET=workers runs a deployment)")
    synapse, proxy = proxied_synapse
    carol = await synapse_owner(session, synapse, "pjr_carol")
    room_id = await synapse_room(carol, "partial restart from Synapse")
    proxy.hold_state = True

    joiner = RanvierProcess.create(tmp_path / "ranvier")
    await asyncio.to_thread(joiner.start)
    try:
        bob = await ProcessClient.register_on(session, joiner, "bob")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await bob.ok("POST", f"/join/{room_id}", {}, server_name=synapse.server_name)
        _figure(f"Ranvier /join of a {MEMBERS + 1}-member Synapse room answered", loop.time() - t0)
        (send_join,) = proxy.asked(SEND_JOIN, room_id)
        at_join = "event_id=" + urlsplit(send_join).path.rsplit("/", 1)[1]
        # Usable while partial: messages both ways before the kill.
        await bob.send_text(room_id, "bob before the kill")
        await eventually(_has(carol, room_id, "bob before the kill"), timeout=FED_TIMEOUT)
        await carol.send_text(room_id, "carol before the kill")
        # Through /sync, not /messages: a backfill would bring the members' joins (the room's history)
        # before the resync asks for them, and the resumed resync would have nothing left to fetch.
        lazy = SyncReader(bob, lazy_load_members=True)
        await eventually(lambda: lazy.has_text(room_id, "carol before the kill"), timeout=FED_TIMEOUT)

        # The resync got the state ids at the join and now waits for the members (/state).
        await asyncio.wait_for(proxy.state_held.wait(), FED_TIMEOUT)
        assert len(proxy.asked(STATE_IDS, room_id, at_join)) == 1
        assert len(proxy.asked(STATE, room_id, at_join)) == 1
        assert joiner.proc is not None
        await asyncio.to_thread(_sigkill, joiner.proc)
        joiner.proc = None
        _figure("killed mid-resync", loop.time() - t0)
        proxy.hold_state = False
        proxy.release_state()  # the held request goes on to Synapse; its asker is gone

        await asyncio.to_thread(joiner.start)
        t1 = loop.time()
        # /members waits for the full state: right once the resumed resync has completed.
        assert await joined_count(bob, room_id) == MEMBERS + 2, joiner.log_tail()  # carol, members, bob
        _figure("full member list after the restart", loop.time() - t1)
        log = joiner.log_tail(10_000_000)
        assert "resuming the partial-state resync of" in log, log[-4000:]
        assert "partial-state resync of" in log and " complete via " + synapse.server_name in log

        # Kept across the kill: both messages, and the room works both ways.
        texts = await bob.texts(room_id)
        assert texts.count("bob before the kill") == 1 and texts.count("carol before the kill") == 1, texts
        await bob.send_text(room_id, "bob after the restart")
        await eventually(_has(carol, room_id, "bob after the restart"), timeout=FED_TIMEOUT)
        await carol.send_text(room_id, "carol after the restart")
        await eventually(_has(bob, room_id, "carol after the restart"), timeout=FED_TIMEOUT)

        # Nothing asked twice: the state ids at the join were kept, the join was not made again, no event
        # fetched twice; the members came in the one /state after the restart (the first died with the
        # process). (/messages may ask the state at a backfilled event: not the resync's.)
        assert len(proxy.asked(STATE_IDS, room_id, at_join)) == 1, proxy.asked(STATE_IDS)
        assert proxy.asked(SEND_JOIN, room_id) == [send_join]
        assert len(proxy.asked(STATE, room_id, at_join)) == 2, proxy.asked(STATE)
        events = proxy.asked(EVENT)
        assert len(events) == len(set(events)), events
    finally:
        joiner.stop()


# -- Synapse, the joiner, killed mid-resync ---------------------------------------------------------------


class RecordingStateProxy(StateHoldingProxy):
    """``StateHoldingProxy`` (in front of Ranvier) that also records each request's method and path."""

    def __init__(self, workdir: Path, port: int) -> None:
        super().__init__(workdir, port)
        self.requests: list[tuple[str, str]] = []

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, unquote(request.path)))
        return await super()._forward(request)


@pytest.fixture
async def ranvier_behind_state_proxy(tmp_path: Path) -> AsyncIterator[tuple[Homeserver, RecordingStateProxy]]:
    proxy_port = free_port()
    proxy = RecordingStateProxy(tmp_path / "proxy", proxy_port)
    await proxy.start()
    hs = await start_ranvier_behind(tmp_path / "ranvier", f"127.0.0.1:{proxy_port}")
    proxy.upstream = f"https://127.0.0.1:{hs.ports['federation']}"
    try:
        yield hs, proxy
    finally:
        await hs.stop()
        await proxy.close()


@pytest.fixture
def own_synapse(tmp_path: Path) -> Iterator[SynapseServer]:
    """A Synapse of this test alone (it is killed)."""
    synapse = SynapseServer(version=DEFAULT_VERSION, workdir=tmp_path / "synapse", python=ensure_synapse())
    synapse.configure()
    synapse.start()
    try:
        yield synapse
    finally:
        synapse.stop()


def _killpg(synapse: SynapseServer) -> None:
    assert synapse.process is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(synapse.process.pid, signal.SIGKILL)
    synapse.process.wait()


async def test_synapse_joiner_killed_mid_resync_resumes_against_ranvier(
    own_synapse: SynapseServer,
    ranvier_behind_state_proxy: tuple[Homeserver, RecordingStateProxy],
    session: aiohttp.ClientSession,
) -> None:
    synapse = own_synapse
    ranvier, proxy = ranvier_behind_state_proxy
    alice = await Client.register(session, ranvier, "alice")
    room_id = await alice.create_room(name="partial restart from Ranvier", topic="partial state")
    await add_ranvier_members(ranvier, room_id, MEMBERS)
    await alice.send_text(room_id, "old news")
    dave = await SynapseClient.register_on(session, synapse, "pjr_dave")
    proxy.hold_state = True
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await dave.ok("POST", f"/join/{room_id}", {}, server_name=ranvier.server_name)
    assert proxy.send_join_queries and proxy.send_join_queries[-1].get("omit_members") == "true"

    lazy = SyncReader(dave, lazy_load_members=True)
    await eventually(lambda: lazy.is_joined(room_id), timeout=FED_TIMEOUT)
    await dave.send_text(room_id, "dave before the kill")
    await eventually(_has(alice, room_id, "dave before the kill"), timeout=FED_TIMEOUT)
    await alice.send_text(room_id, "alice before the kill")
    await eventually(lambda: lazy.has_text(room_id, "alice before the kill"), timeout=FED_TIMEOUT)

    async def held() -> bool:
        return proxy.state_held >= 1

    await eventually(held, timeout=FED_TIMEOUT)  # Synapse's resync started, and waits
    await asyncio.to_thread(_killpg, synapse)
    _figure("Synapse killed mid-resync", loop.time() - t0)
    asked_before = len(proxy.requests)
    proxy.hold_state = False
    proxy.release_state()

    t1 = loop.time()
    await asyncio.to_thread(synapse.start)
    # Synapse's /members waits for the full state of a partial-state room: it comes from our resident.
    assert await joined_count(dave, room_id) == MEMBERS + 2, synapse.tail_log()  # alice, members, dave
    _figure("Synapse /members complete after its restart", loop.time() - t1)
    # The resumed resync asked our resident again (the held request died with the process).
    resumed = [p for m, p in proxy.requests[asked_before:] if p.startswith((STATE_IDS, STATE))]
    assert any(room_id in p for p in resumed), proxy.requests[asked_before:]

    # And it was the resync resumed at start that completed the room (Synapse 1.163.2's log line; its
    # log handler buffers, so the line may come a little after the answer).
    async def resumed_in_log() -> bool:
        text = synapse.log_path.read_text(errors="replace")
        since_restart = text.rsplit("***** STARTING SERVER *****", 1)[1]
        return f"State resync complete for {room_id}" in since_restart

    await eventually(resumed_in_log, timeout=FED_TIMEOUT, interval=0.5)
    assert await ranvier.storage.rooms.is_partial_state(room_id) is False

    texts = await dave.texts(room_id)
    assert "dave before the kill" in texts and "alice before the kill" in texts, texts
    await dave.send_text(room_id, "dave after the restart")
    await eventually(_has(alice, room_id, "dave after the restart"), timeout=FED_TIMEOUT)
