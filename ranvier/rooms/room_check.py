"""Room check: do the servers in a room agree with us on its state, and does either side lack events?

For every other server joined to the room we ask, over federation:
- its current forward extremities (MSC4370, served by Ranvier; a server without the endpoint is reported
  as such): those we do not hold are events we lack, i.e. a gap on our side;
- ``/state_ids`` at each of our forward extremities (the state before that event, as ours is computed):
  a 404 means it lacks our event; otherwise every state key where its event differs from ours is
  reported with both sides' event ids, and the state and auth-chain events it names that we do not hold
  are events we lack.

Healing (only when asked): an event we lack is fetched from the server that has it and handed to the
inbound pipeline as if that server had sent it, which fetches what lies between (``/get_missing_events``)
and the state at any remaining gap; an event of ours a server lacks is queued for it in the durable
outbox. A split room is then found by one command (``ranvier room-check``, the admin API, the DAG page),
not by users noticing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..federation.client import FederationClient, FederationError, path_segment
from ..protocol.events import StateKey
from ..storage.protocols.composite import HasEvents, HasRooms, HasState

logger = logging.getLogger(__name__)

MSC4370_PATH = "/_matrix/federation/unstable/org.matrix.msc4370/extremities/"
CHECK_TIMEOUT = 20.0
# Our forward extremities asked about per server; a room with more is reported on its newest ones.
MAX_ANCHORS = 5
# Unknown state events fetched per server to learn their (type, state_key).
MAX_KEY_FETCHES = 100

ReceivePdus = Callable[[str, Sequence[Any]], Awaitable[Any]]


class RoomCheckStorage(HasRooms, HasEvents, HasState, Protocol):
    """What rooms/room_check.py asks of storage."""


@dataclass
class Divergence:
    event_type: str
    state_key: str
    ours: str | None
    theirs: str | None

    def json(self) -> dict[str, Any]:
        return {
            "type": self.event_type,
            "state_key": self.state_key,
            "ours": self.ours,
            "theirs": self.theirs,
        }


@dataclass
class ServerReport:
    server: str
    reachable: bool = True
    error: str | None = None
    # None: the server does not serve MSC4370 (Synapse), so its newest events are not known
    extremities: list[str] | None = None
    # per anchor (our forward extremity): the state keys where the server's state before it differs
    divergent: dict[str, list[Divergence]] = field(default_factory=dict)
    we_lack: set[str] = field(default_factory=set)
    they_lack: set[str] = field(default_factory=set)
    healed: dict[str, Any] = field(default_factory=dict)

    @property
    def agrees(self) -> bool:
        return (
            self.error is None
            and not self.we_lack
            and not self.they_lack
            and not any(self.divergent.values())
        )

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "server": self.server,
            "reachable": self.reachable,
            "agrees": self.agrees,
            "extremities": self.extremities,
            "divergent_state": {a: [d.json() for d in ds] for a, ds in self.divergent.items()},
            "events_we_lack": sorted(self.we_lack),
            "events_they_lack": sorted(self.they_lack),
        }
        if self.error is not None:
            out["error"] = self.error
        if self.healed:
            out["healed"] = self.healed
        return out


@dataclass
class RoomCheckReport:
    room_id: str
    anchors: list[str]
    servers: list[ServerReport]

    @property
    def agrees(self) -> bool:
        return all(s.agrees for s in self.servers)

    def json(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "agrees": self.agrees,
            "our_extremities": self.anchors,
            "servers": [s.json() for s in self.servers],
        }


class RoomChecker:
    def __init__(
        self,
        storage: RoomCheckStorage,
        client: FederationClient,
        server_name: str,
        receive_pdus: ReceivePdus,
        send_pdu_to: Callable[[list[str], str, str], Awaitable[None]],
    ) -> None:
        self._storage = storage
        self._client = client
        self._server_name = server_name
        self._receive = receive_pdus
        self._send_pdu_to = send_pdu_to

    async def check(self, room_id: str, heal: bool = False) -> RoomCheckReport | None:
        """None for a room we do not know."""
        if await self._storage.rooms.get_room_version(room_id) is None:
            return None
        extremities = sorted(await self._storage.events.get_forward_extremities(room_id))
        anchors = extremities[:MAX_ANCHORS]
        servers = sorted(await self._storage.state.get_joined_servers(room_id) - {self._server_name})
        reports = await asyncio.gather(*(self._check_server(room_id, s, anchors) for s in servers))
        if heal:
            for report in reports:
                if report.reachable:
                    await self._heal(room_id, report)
        return RoomCheckReport(room_id, anchors, list(reports))

    async def _check_server(self, room_id: str, server: str, anchors: list[str]) -> ServerReport:
        report = ServerReport(server)
        try:
            report.extremities = await self._extremities(server, room_id)
            if report.extremities is not None:
                held = await self._storage.events.have_events(report.extremities)
                report.we_lack.update(e for e in report.extremities if e not in held)
            fetched = 0
            for anchor in anchors:
                fetched += await self._compare_at(room_id, server, anchor, report, MAX_KEY_FETCHES - fetched)
        except FederationError as e:
            # status 0: no answer at all; otherwise the server answered with a refusal (e.g. 403)
            report.reachable = e.status != 0
            report.error = str(e)
        return report

    async def _extremities(self, server: str, room_id: str) -> list[str] | None:
        try:
            answer = await self._client.request(
                "GET", server, MSC4370_PATH + path_segment(room_id), timeout=CHECK_TIMEOUT
            )
        except FederationError as e:
            if e.status in (400, 404, 405) and e.errcode in (None, "M_UNRECOGNIZED"):
                return None  # the endpoint is not served there
            raise
        tips = answer.get("prev_events") if isinstance(answer, dict) else None
        return sorted(t for t in tips if isinstance(t, str)) if isinstance(tips, list) else None

    async def _compare_at(
        self, room_id: str, server: str, anchor: str, report: ServerReport, fetch_budget: int
    ) -> int:
        """Compares the state before ``anchor``; returns how many events were fetched to learn keys."""
        try:
            answer = await self._client.get_state_ids(server, room_id, anchor)
        except FederationError as e:
            if e.status == 404:
                report.they_lack.add(anchor)
                return 0
            raise
        theirs_ids = [e for e in answer.get("pdu_ids", []) if isinstance(e, str)]
        chain = [e for e in answer.get("auth_chain_ids", []) if isinstance(e, str)]
        held = await self._storage.events.have_events([*theirs_ids, *chain])
        report.we_lack.update(e for e in [*theirs_ids, *chain] if e not in held)
        keys, fetched = await self._keys_of(server, theirs_ids, held, fetch_budget)
        theirs: dict[StateKey, str] = {}
        unknown_keys: list[str] = []
        for event_id in theirs_ids:
            key = keys.get(event_id)
            if key is None:
                unknown_keys.append(event_id)
            else:
                theirs[key] = event_id
        ours = await self._storage.state.get_state_ids_before(anchor)
        divergent = [
            Divergence(k[0], k[1], ours.get(k), theirs.get(k))
            for k in sorted(set(ours) | set(theirs))
            if ours.get(k) != theirs.get(k)
        ]
        # State events whose key we could not learn are differences we cannot place under a key.
        divergent += [Divergence("?", "?", None, e) for e in unknown_keys]
        report.divergent[anchor] = divergent
        return fetched

    async def _keys_of(
        self, server: str, event_ids: list[str], held: set[str], budget: int
    ) -> tuple[dict[str, StateKey], int]:
        keys: dict[str, StateKey] = {}
        ours = await self._storage.events.get_events([e for e in event_ids if e in held])
        for event_id, pdu in ours.items():
            if pdu.state_key is not None:
                keys[event_id] = (pdu.type, pdu.state_key)
        fetched = 0
        for event_id in event_ids:
            if event_id in keys or event_id in held or fetched >= budget:
                continue
            fetched += 1
            # Only to name the key in the report: the event is not stored or trusted.
            answer = await self._client.get_event(server, event_id)
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            raw = pdus[0] if isinstance(pdus, list) and pdus and isinstance(pdus[0], dict) else None
            if raw is not None and isinstance(raw.get("type"), str) and isinstance(raw.get("state_key"), str):
                keys[event_id] = (raw["type"], raw["state_key"])
        return keys, fetched

    async def _heal(self, room_id: str, report: ServerReport) -> None:
        taken: dict[str, str] = {}
        for event_id in sorted(report.we_lack):
            try:
                answer = await self._client.get_event(report.server, event_id)
                pdus = answer.get("pdus") if isinstance(answer, dict) else None
                if not isinstance(pdus, list) or not pdus:
                    taken[event_id] = "not served"
                    continue
                result = await self._receive(report.server, pdus[:1])
                error = result.get(event_id, {}).get("error") if isinstance(result, dict) else None
                taken[event_id] = error or "taken"
            except FederationError as e:
                taken[event_id] = f"fetch failed: {e}"
        sent = sorted(report.they_lack)
        if sent:
            for event_id in sent:
                await self._send_pdu_to([report.server], event_id, room_id)
        report.healed = {"fetched": taken, "queued_for_them": sent}
        logger.info("room check of %s healed with %s: %s", room_id, report.server, report.healed)
