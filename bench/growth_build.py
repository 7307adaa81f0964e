"""Big rooms for ``bench growth``, built fast: before the server process starts, an in-process Ranvier on the
same configuration and database creates one room per size (through its client API) and persists the member
joins of the remote driver's users straight through storage's ``persist_events``, 1,000 per transaction,
each a real event signed with the driver's key and checked against the auth rules, its state derived from
its one prev event (``state_before_is_after_prev``). The same way ``bench partial_join`` builds its rooms,
with remote members instead of local ones.

Going through the federation intake instead would measure the intake at every size on the way up: on this
machine 100,000 joins that way take hours (the intake's cost per state event grows with the room; see
bench/README.md), which is a finding of the growth curve, not a way to build its rooms.

``python3 -m bench growth_build`` is not a benchmark; it prints this text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp

from bench.ingest import DriverRoom, IngestDriver
from bench.servers import RanvierServer
from bench.workloads.client import MxClient, q
from ranvier.app import Homeserver
from ranvier.config import load_config
from ranvier.protocol.auth.rules import check_auth_rules
from ranvier.protocol.auth.selection import auth_types_for_event
from ranvier.protocol.events import Pdu, StateKey, build_event
from ranvier.rooms.local_events import depth_after
from ranvier.storage.interfaces import EventToPersist

BATCH = 1000  # joins per persist_events transaction
FIXED_KEYS: set[StateKey] = {("m.room.create", ""), ("m.room.join_rules", ""), ("m.room.power_levels", "")}


class PrebuiltRanvier(RanvierServer):
    """A server whose configuration (and signing key) is written once: the rooms built in its database
    before it starts must stay valid when it does."""

    def configure(self) -> None:
        if not (self.workdir / "homeserver.yaml").exists():
            super().configure()


@dataclass
class BuiltRoom:
    room_id: str
    size: int  # state events in the room's current state
    room: DriverRoom  # the driver's view: its state map and the last event, to extend the chain from
    members: list[str]
    build_s: float
    owner: Owner  # its creator, in no other room (Ranvier's /sync does not apply a filter's "rooms")


@dataclass
class Owner:
    """The local user who created the rooms (its token stays valid in the server process: same database)."""

    user_id: str
    token: str

    def client(self, session: aiohttp.ClientSession, base_url: str) -> MxClient:
        return MxClient(session, base_url, self.user_id, self.token)


async def _add_driver_members(hs: Homeserver, driver: IngestDriver, room_id: str, count: int) -> DriverRoom:
    rv = await hs.creator.room_version(room_id)
    async with hs.persister.room_lock(room_id):
        prev_ids, state = await hs.creator.tips_and_state(room_id, rv)
        if len(prev_ids) != 1:
            raise RuntimeError(f"expected one forward extremity in a fresh room, got {prev_ids}")
        depth = await hs.storage.events.get_max_depth_of(prev_ids)
        fixed = await hs.state.load_state_events({k: v for k, v in state.items() if k in FIXED_KEYS})
        last: Pdu | None = None
        for start in range(0, count, BATCH):
            batch: list[EventToPersist] = []
            for i in range(start, min(count, start + BATCH)):
                user = f"@m{i}:{driver.server_name}"
                content = {"membership": "join"}
                auth_keys = auth_types_for_event(rv, "m.room.member", user, user, content)
                depth = depth_after(rv, depth)
                pdu = build_event(
                    room_version=rv, room_id=room_id, sender=user, event_type="m.room.member",
                    content=content, state_key=user, prev_events=prev_ids, depth=depth,
                    auth_events=sorted(e.event_id for k, e in fixed.items() if k in auth_keys),
                    origin_server_ts=int(time.time() * 1000), server_name=driver.server_name,
                    signing_key=driver.fed.keyring.signing_key,
                )  # fmt: skip
                check_auth_rules(pdu, fixed)  # a new member: only create, join rules and power levels count
                batch.append(EventToPersist(pdu=pdu, state_before_is_after_prev=True))
                state[("m.room.member", user)] = pdu.event_id
                driver.events[pdu.event_id] = pdu
                prev_ids, last = [pdu.event_id], pdu
            await hs.storage.events.persist_events(room_id, batch, new_current_state=dict(state))
    if last is None:
        raise RuntimeError("a room needs at least one member of the driver")
    return DriverRoom(room_id, rv, last.sender, dict(state), last)


async def build_rooms(server: PrebuiltRanvier, driver: IngestDriver, sizes: list[int]) -> list[BuiltRoom]:
    """One room per size (``size`` state events in all: the creator's and the driver's members), each made
    by a user of its own."""
    server.configure()
    hs = Homeserver(load_config(server.workdir / "homeserver.yaml"))
    await hs.start()
    built: list[BuiltRoom] = []
    try:
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{hs.ports['client']}"
            for size in sizes:
                t0 = time.perf_counter()
                creator = await MxClient.register(session, base, "grow")
                room_id = await creator.create_room(name=f"growth {size}")
                created = len(await creator.ok("GET", f"/rooms/{q(room_id)}/state"))
                room = await _add_driver_members(hs, driver, room_id, max(1, size - created))
                took = time.perf_counter() - t0
                owner = Owner(creator.user_id, creator.token)
                members = [k[1] for k in room.state if k[0] == "m.room.member" and k[1] != owner.user_id]
                built.append(BuiltRoom(room_id, len(room.state), room, members, took, owner))
                print(f"  built a room of {len(room.state)} state events in {took:.1f} s", flush=True)
    finally:
        await hs.stop()
    return built


def main(argv: list[str]) -> None:
    print(__doc__)
