"""Ranvier's simplified sliding sync answers compared with Synapse 1.163.2's, field by field, for the same
sequence of actions run on each server: rooms created and joined, messages, a local invite, an invite
from a room on the *other* server (stripped state over federation) that is then joined over federation,
a member joining and leaving, a state change. Ids, timestamps and stream positions are normalised;
``notification_count``/``highlight_count`` are compared by presence only, since Synapse 1.163 sends a
fixed 0 for both ("dummy values" in its handler) while Ranvier computes them from the push rules."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.scenarios.servers import eventually
from tests.sliding_sync.helpers import SlidingClient, register

from .peers import SynapseClient
from .synapse import SynapseServer

pytestmark = pytest.mark.interop
FED_TIMEOUT = 30.0
_run = itertools.count()

REQUEST: dict[str, Any] = {
    "lists": {
        "all": {
            "ranges": [[0, 9]],
            "required_state": [["m.room.topic", ""], ["m.room.member", "$LAZY"], ["m.room.name", ""]],
            "timeline_limit": 2,
        },
        "invites": {
            "ranges": [[0, 4]],
            "required_state": [],
            "timeline_limit": 0,
            "filters": {"is_invite": True},
        },
        "not-invites": {
            "ranges": [[0, 1]],
            "required_state": [["m.room.member", "$ME"]],
            "timeline_limit": 1,
            "filters": {"is_invite": False, "not_room_types": ["m.space"]},
        },
    },
    "room_subscriptions": {},
    "extensions": {
        name: {"enabled": True} for name in ("to_device", "e2ee", "account_data", "receipts", "typing")
    },
}


class Labels:
    """Replaces ids with names that mean the same thing on both servers."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def add(self, real: str, label: str) -> None:
        self.names[real] = label
        if real.startswith("@"):
            self.names[real[1:].split(":")[0]] = label  # the default display name is the localpart

    def __call__(self, value: Any) -> Any:
        return self.names.get(value, value) if isinstance(value, str) else value


def summary(event: dict[str, Any], labels: Labels) -> tuple[Any, ...]:
    content = event.get("content", {})
    detail = {
        k: labels(content[k]) for k in ("body", "membership", "name", "topic", "displayname") if k in content
    }
    return (
        event["type"],
        labels(event.get("state_key")),
        labels(event.get("sender")),
        sorted(detail.items()),
    )


def unordered(lists: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {"count": entry["count"], "ops": [(op, rng, sorted(ids)) for op, rng, ids in entry["ops"]]}
        for name, entry in lists.items()
    }


def normalise(body: dict[str, Any], labels: Labels) -> dict[str, Any]:
    lists = {
        name: {
            "count": entry["count"],
            "ops": [
                (op["op"], op["range"], [labels(r) for r in op["room_ids"]]) for op in entry.get("ops", [])
            ],
        }
        for name, entry in body.get("lists", {}).items()
    }
    rooms: dict[str, Any] = {}
    for room_id, room in body["rooms"].items():
        out: dict[str, Any] = {"keys": sorted(room)}
        for key in (
            "name",
            "avatar",
            "initial",
            "limited",
            "num_live",
            "joined_count",
            "invited_count",
            "is_dm",
        ):
            if key in room:
                out[key] = room[key]
        if "heroes" in room:
            out["heroes"] = [(labels(h["user_id"]), labels(h.get("displayname"))) for h in room["heroes"]]
        if "timeline" in room:
            out["timeline"] = [summary(e, labels) for e in room["timeline"]]
        if "required_state" in room:
            out["required_state"] = sorted(summary(e, labels) for e in room["required_state"])
        if "invite_state" in room:
            # What an invite carries is the inviting server's choice: Synapse adds the inviter's own
            # m.room.member to it, Ranvier (rooms/stripped_state.py) does not. Compared without it.
            out["invite_state"] = sorted(
                summary(e, labels)
                for e in room["invite_state"]
                if e["type"] != "m.room.member" or e.get("content", {}).get("membership") != "join"
            )
        rooms[labels(room_id)] = out
    return {
        "lists": lists,
        "rooms": rooms,
        "extensions": normalise_extensions(body.get("extensions", {}), labels),
    }


def normalise_extensions(ext: dict[str, Any], labels: Labels) -> dict[str, Any]:
    out: dict[str, Any] = {"keys": sorted(ext)}
    if "to_device" in ext:
        out["to_device"] = (sorted(ext["to_device"]), len(ext["to_device"]["events"]))
    if "e2ee" in ext:
        e2ee = ext["e2ee"]
        lists = e2ee.get("device_lists")
        out["e2ee"] = (
            sorted(e2ee),
            sorted(e2ee["device_one_time_keys_count"].items()),
            e2ee["device_unused_fallback_key_types"],
            None if lists is None else {k: sorted(labels(u) for u in v) for k, v in lists.items()},
        )
    if "account_data" in ext:
        data = ext["account_data"]
        out["account_data"] = (
            # Only the types the scenario sets: each server also has its own (push rules and the like).
            sorted(e["type"] for e in data["global"] if e["type"].startswith("org.example")),
            {labels(r): sorted(e["type"] for e in events) for r, events in data["rooms"].items()},
        )
    if "receipts" in ext:
        out["receipts"] = {
            labels(room): sorted(
                (receipt_type, labels(user))
                for by_type in event["content"].values()
                for receipt_type, users in by_type.items()
                for user in users
            )
            for room, event in ext["receipts"]["rooms"].items()
        }
    if "typing" in ext:
        out["typing"] = {
            labels(room): sorted(labels(u) for u in event["content"]["user_ids"])
            for room, event in ext["typing"]["rooms"].items()
        }
    return out


async def scenario(
    home: str,
    remote: str,
    session: aiohttp.ClientSession,
    users: dict[str, SlidingClient],
    remote_user: SlidingClient,
) -> tuple[list[dict[str, Any]], Labels]:
    """The actions, on ``home`` with a room of ``remote``; returns alice's normalised sliding sync answers."""
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    labels = Labels()
    for label, client in (*users.items(), ("dave", remote_user)):
        labels.add(client.user_id, label)
    named = await alice.create_room(name="Named", topic="T1", preset="public_chat")
    labels.add(named, "named")
    await bob.ok("POST", f"/join/{named}", {})
    await bob.text(named, "hello")
    plain = await alice.create_room(preset="public_chat")
    labels.add(plain, "plain")
    await bob.ok("POST", f"/join/{plain}", {})
    await alice.text(plain, "plain text")
    invite = await bob.create_room(invite=[alice.user_id])
    labels.add(invite, "local-invite")
    far = await remote_user.create_room(name="Remote", preset="private_chat", invite=[alice.user_id])
    labels.add(far, "remote")
    await alice.ok("PUT", f"/user/{alice.user_id}/account_data/org.example.global", {"g": 1})
    await alice.ok("PUT", f"/user/{alice.user_id}/rooms/{named}/account_data/org.example.room", {"r": 1})
    hello = (await alice.ok("GET", f"/rooms/{named}/messages", dir="b", limit="1"))["chunk"][0]["event_id"]
    await bob.ok("POST", f"/rooms/{named}/receipt/m.read/{hello}", {})
    await bob.ok("PUT", f"/rooms/{plain}/typing/{bob.user_id}", {"typing": True, "timeout": 60000})

    async def invited() -> bool:
        body = await alice.sync(REQUEST, fresh=True)
        return far in body["rooms"]

    await eventually(invited, timeout=FED_TIMEOUT)
    answers = [normalise(await alice.sync(REQUEST, fresh=True), labels)]
    first_pos = alice.pos

    await alice.ok("POST", f"/join/{far}", {})
    await remote_user.text(far, "from afar")

    async def arrived() -> bool:
        messages = await alice.ok("GET", f"/rooms/{far}/messages", dir="b", limit="5")
        return any(e["content"].get("body") == "from afar" for e in messages["chunk"])

    await eventually(arrived, timeout=FED_TIMEOUT)
    await carol.ok("POST", f"/join/{named}", {})
    await carol.ok("POST", f"/rooms/{named}/leave", {})
    await alice.state(named, "m.room.topic", {"topic": "T2"})
    await bob.text(named, "second")
    alice.pos = first_pos
    answers.append(normalise(await alice.sync(REQUEST), labels))
    # One more message, and the local invite rejected (a leave): the smallest incremental answers.
    await bob.text(plain, "third")
    await alice.ok("POST", f"/rooms/{invite}/leave", {})
    answers.append(normalise(await alice.sync(REQUEST, timeout_ms=5000), labels))
    # The client opens a room: a subscription with a larger timeline_limit (the expanded timeline) and
    # every member's state.
    opened = {
        **REQUEST,
        "room_subscriptions": {plain: {"required_state": [["m.room.member", "*"]], "timeline_limit": 3}},
    }
    answers.append(normalise(await alice.sync(opened), labels))
    return answers, labels


async def test_sliding_sync_matches_synapse(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    run = next(_run)
    ranvier_url = f"http://127.0.0.1:{ranvier.ports['client']}"
    r_users = {n: await register(session, ranvier_url, f"cmp{run}r{n}") for n in ("alice", "bob", "carol")}
    s_users: dict[str, SlidingClient] = {}
    for n in ("alice", "bob", "carol"):
        client = await SynapseClient.register_on(session, synapse, f"cmp{run}s{n}")
        s_users[n] = SlidingClient(session, synapse.client_url, client.user_id, client.token)
    # Each side's remote user lives on the other server.
    s_dave = await SynapseClient.register_on(session, synapse, f"cmp{run}sdave")
    r_dave = await register(session, ranvier_url, f"cmp{run}rdave")
    ours, theirs = await asyncio.gather(
        scenario(
            "ranvier",
            "synapse",
            session,
            r_users,
            SlidingClient(session, synapse.client_url, s_dave.user_id, s_dave.token),
        ),
        scenario("synapse", "ranvier", session, s_users, r_dave),
    )
    # Recency order, checked on our side against the order of the scenario's actions: the newest is the
    # invite from the other server, then the local invite, then the two rooms by their last message.
    (_, _, order), *_ = ours[0][0]["lists"]["all"]["ops"]
    assert order == ["remote", "local-invite", "plain", "named"]
    for step, (mine, reference) in enumerate(zip(ours[0], theirs[0], strict=True)):
        # Against Synapse the lists are compared as sets of rooms per range: in a full run, where its
        # session-wide process had served every other interop test first, Synapse 1.163.2 once listed step
        # 0 oldest first (the order this scenario's actions give, reversed) while alone it lists newest
        # first, as we do.
        assert unordered(mine["lists"]) == unordered(reference["lists"]), f"step {step}: lists"
        assert set(mine["rooms"]) == set(reference["rooms"]), f"step {step}: rooms"
        assert mine["extensions"] == reference["extensions"], f"step {step}: extensions"
        for room in reference["rooms"]:
            assert mine["rooms"][room] == reference["rooms"][room], (
                f"step {step}: room {room}: {mine} {reference}"
            )
