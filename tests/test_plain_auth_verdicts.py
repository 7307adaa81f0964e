"""Steps 4 and 5 of the PDU checks (rooms/pdu_checks.py) remember the auth rules' passes for "plain" events
(not create, member, power levels, third-party invite, aliases or redaction), which only the event's room,
sender, type and state key and the create, power levels and sender's member events decide: a chain of
messages citing the same auth events is checked once, and every verdict stays what the rules say."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from ranvier.protocol.events import Pdu, StateKey, build_event
from ranvier.protocol.room_versions import get_room_version
from ranvier.protocol.signing import SigningKey
from ranvier.rooms import pdu_checks

SERVER = "a.example"
ALICE, BOB = f"@alice:{SERVER}", f"@bob:{SERVER}"


class Room:
    """A tiny room of one version: create, Alice's join, power levels; events built on top of them."""

    def __init__(self, version: str) -> None:
        self.rv = get_room_version(version)
        self.key = SigningKey.generate("a1")
        self.depth = 0
        self.events: dict[str, tuple[Pdu, str | None]] = {}
        v12 = self.rv.room_id_from_create_event
        content: dict[str, Any] = {"room_version": version}
        if not self.rv.implicit_room_creator:
            content["creator"] = ALICE
        self.create = self.build(None if v12 else f"!r:{SERVER}", ALICE, "m.room.create", content, [], "")
        self.room_id = self.create.room_id
        self.alice = self.build_state(ALICE, "m.room.member", {"membership": "join"}, ALICE)
        self.pl = self.pl_event({"users": {ALICE: 100}, "events_default": 0})

    def build(
        self, room_id: str | None, sender: str, etype: str, content: dict[str, Any], auth: list[Pdu], sk: Any
    ) -> Pdu:
        self.depth += 1
        pdu = build_event(
            room_version=self.rv,
            room_id=room_id,
            sender=sender,
            event_type=etype,
            content=content,
            prev_events=[],
            auth_events=auth,
            depth=self.depth,
            origin_server_ts=self.depth,
            server_name=SERVER,
            signing_key=self.key,
            state_key=sk,
        )
        self.events[pdu.event_id] = (pdu, None)
        return pdu

    def cited_create(self) -> list[Pdu]:
        return [] if self.rv.room_id_from_create_event else [self.create]

    def build_state(self, sender: str, etype: str, content: dict[str, Any], sk: str) -> Pdu:
        auth = self.cited_create() + ([self.alice] if etype != "m.room.member" else [])
        return self.build(self.room_id, sender, etype, content, auth, sk)

    def pl_event(self, content: dict[str, Any]) -> Pdu:
        return self.build(
            self.room_id, ALICE, "m.room.power_levels", content, [*self.cited_create(), self.alice], ""
        )

    def message(self, sender: str, member: Pdu, pl: Pdu, body: str, etype: str = "m.room.message") -> Pdu:
        auth = [*self.cited_create(), member, pl]
        return self.build(self.room_id, sender, etype, {"msgtype": "m.text", "body": body}, auth, None)

    def state(self, member: Pdu, pl: Pdu) -> dict[StateKey, str]:
        state = {("m.room.create", ""): self.create.event_id, ("m.room.power_levels", ""): pl.event_id}
        state["m.room.member", member.state_key or ""] = member.event_id
        return state

    async def load(self, ids: Iterable[str]) -> dict[str, tuple[Pdu, str | None]]:
        return {i: self.events[i] for i in ids if i in self.events}

    def check(self, pdu: Pdu, state: dict[StateKey, str]) -> tuple[str | None, str | None]:
        async def both() -> tuple[str | None, str | None]:
            step4 = await pdu_checks.check_against_auth_events(self.rv, pdu, self.load)
            return step4, await pdu_checks.check_against_state(pdu, state, self.load)

        return asyncio.run(both())


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """A fresh memo, and how many times the rules and the auth events list check run."""
    monkeypatch.setattr(pdu_checks, "_plain", pdu_checks._PlainVerdicts())
    counts = {"rules": 0, "list": 0}
    rules, listed = pdu_checks.check_auth_rules, pdu_checks.check_auth_events_list

    def count_rules(*args: Any) -> Any:
        counts["rules"] += 1
        return rules(*args)

    def count_list(*args: Any) -> Any:
        counts["list"] += 1
        return listed(*args)

    monkeypatch.setattr(pdu_checks, "check_auth_rules", count_rules)
    monkeypatch.setattr(pdu_checks, "check_auth_events_list", count_list)
    return counts


@pytest.mark.parametrize("version", ["4", "10", "11", "12"])
def test_a_chain_of_messages_is_checked_once(version: str, counted: dict[str, int]) -> None:
    room = Room(version)
    state = room.state(room.alice, room.pl)
    for i in range(50):
        assert room.check(room.message(ALICE, room.alice, room.pl, f"m{i}"), state) == (None, None)
    # 100 rule checks and 50 list checks for the 50 messages before the memo
    assert counted == {"rules": 1, "list": 1}


def test_v1_event_ids_are_not_remembered(counted: dict[str, int]) -> None:
    # v1-v2 ids are chosen by the origin, not a hash of the event: an id does not stand for one content
    room = Room("1")
    state = room.state(room.alice, room.pl)
    for i in range(3):
        assert room.check(room.message(ALICE, room.alice, room.pl, f"m{i}"), state) == (None, None)
    assert counted == {"rules": 6, "list": 3}


@pytest.mark.parametrize("version", ["10", "12"])
def test_verdicts_follow_the_inputs(version: str, counted: dict[str, int]) -> None:
    room = Room(version)
    state = room.state(room.alice, room.pl)
    assert room.check(room.message(ALICE, room.alice, room.pl, "ok"), state) == (None, None)
    # Another sender who is not joined (their leave cited and in the state): rejected by both steps.
    bob_left = room.build_state(BOB, "m.room.member", {"membership": "leave"}, BOB)
    verdicts = room.check(room.message(BOB, bob_left, room.pl, "no"), room.state(bob_left, room.pl))
    assert all(v is not None and "not joined" in v for v in verdicts), verdicts
    # Power levels that require 50 to send messages: Alice (100) passes, Bob (joined, 0) does not, and
    # the earlier pass of the same type with the old power levels does not carry over.
    strict = room.pl_event({"users": {ALICE: 100}, "events_default": 50})
    bob = room.build_state(BOB, "m.room.member", {"membership": "join"}, BOB)
    assert room.check(room.message(BOB, bob, room.pl, "fine"), room.state(bob, room.pl)) == (None, None)
    verdicts = room.check(room.message(BOB, bob, strict, "too low"), room.state(bob, strict))
    assert all(v is not None and "needs level 50" in v for v in verdicts), verdicts
    assert room.check(room.message(ALICE, room.alice, strict, "high"), room.state(room.alice, strict)) == (
        None,
        None,
    )
    # A rejection is not remembered: the same inputs are judged (and refused) again, with their reason.
    before = counted["rules"]
    again = room.check(room.message(BOB, bob, strict, "still too low"), room.state(bob, strict))
    assert again == verdicts
    assert counted["rules"] == before + 2
    # Step 4 looks at the auth events the event cites, step 5 at the state before it: citing Alice's
    # join does not let Bob in.
    mixed = room.message(BOB, room.alice, room.pl, "cites alice")
    step4, step5 = room.check(mixed, room.state(bob_left, room.pl))
    assert step4 is not None and step5 is not None


def test_state_events_other_than_plain_are_always_checked(counted: dict[str, int]) -> None:
    room = Room("10")
    state = room.state(room.alice, room.pl)
    for i in range(3):
        pl = room.pl_event({"users": {ALICE: 100}, "events_default": i})
        assert room.check(pl, state) == (None, None)
    assert counted == {"rules": 6, "list": 3}
