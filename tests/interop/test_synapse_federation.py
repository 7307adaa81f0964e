"""Invites and leaves between Ranvier and a real Synapse, both ways (issue 7)."""

from __future__ import annotations

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.federation.client import FederationError
from ranvier.protocol.events import Pdu
from ranvier.protocol.room_versions import get_room_version
from tests.federation.fedserver import make_client
from tests.scenarios.servers import Client, eventually

from .peers import SynapseClient, SyncReader
from .synapse import SynapseServer

pytestmark = pytest.mark.interop

FED_TIMEOUT = 30.0
# Event formats differ: v12 (domainless room ids, create event not cited), v10 (the classic format with
# `origin`), v1 (event ids with a domain, [event_id, hashes] references).
ROOM_VERSIONS = ["12", "10", "1"]


async def _membership(client: Client, room_id: str, user_id: str) -> str | None:
    status, answer = await client.call("GET", f"/rooms/{room_id}/state/m.room.member/{user_id}")
    return answer.get("membership") if status == 200 else None


@pytest.mark.parametrize("room_version", ROOM_VERSIONS)
async def test_ranvier_invites_a_synapse_user_who_accepts_then_leaves(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession, room_version: str
) -> None:
    alice = await Client.register(session, ranvier, "alice")
    bob = await SynapseClient.register_on(session, synapse, f"fed_bob_a_v{room_version}")
    room_id = await alice.create_room(preset="private_chat", name="Invite only", room_version=room_version)
    await alice.ok("POST", f"/rooms/{room_id}/invite", {"user_id": bob.user_id})

    bob_sync = SyncReader(bob)
    await eventually(lambda: bob_sync.is_invited(room_id), timeout=FED_TIMEOUT)
    # Stripped state (S2S "Inviting to a room", invite_room_state) shows the room's name to the invitee.
    stripped = {e["type"]: e for e in bob_sync.invites[room_id]}
    assert stripped["m.room.name"]["content"]["name"] == "Invite only"
    assert "m.room.join_rules" in stripped
    # We sent full PDUs including m.room.create (S2S invite v2, v1.16): Synapse validated them without
    # complaint (it logs and drops the list otherwise, keeping the invite).
    log = synapse.log_path.read_text(errors="replace")
    complaints = [line for line in log.splitlines() if "failed to validate `invite_room_state`" in line]
    assert not [line for line in complaints if f"state_key={bob.user_id}," in line], complaints

    # No server_name: Synapse joins through the inviter's server.
    await bob.ok("POST", f"/rooms/{room_id}/join", {})
    await eventually(lambda: bob_sync.is_joined(room_id), timeout=FED_TIMEOUT)
    await eventually(lambda: _is(alice, room_id, bob.user_id, "join"), timeout=FED_TIMEOUT)
    await bob.send_text(room_id, "thanks for the invite")
    alice_sync = SyncReader(alice)
    await eventually(lambda: alice_sync.has_text(room_id, "thanks for the invite"), timeout=FED_TIMEOUT)

    await bob.ok("POST", f"/rooms/{room_id}/leave", {})
    await eventually(lambda: _is(alice, room_id, bob.user_id, "leave"), timeout=FED_TIMEOUT)
    await eventually(lambda: bob_sync.has_left(room_id), timeout=FED_TIMEOUT)
    members = await alice.ok("GET", f"/rooms/{room_id}/joined_members")
    assert set(members["joined"]) == {alice.user_id}


@pytest.mark.parametrize("room_version", ROOM_VERSIONS)
async def test_synapse_invites_a_ranvier_user_who_accepts_then_leaves(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession, room_version: str
) -> None:
    carol = await SynapseClient.register_on(session, synapse, f"fed_carol_b_v{room_version}")
    dave = await Client.register(session, ranvier, "dave")
    room_id = await carol.create_room(preset="private_chat", name="Synapse invite", room_version=room_version)
    await carol.ok("POST", f"/rooms/{room_id}/invite", {"user_id": dave.user_id})

    dave_sync = SyncReader(dave)
    await eventually(lambda: dave_sync.is_invited(room_id), timeout=FED_TIMEOUT)
    stripped = {e["type"]: e for e in dave_sync.invites[room_id]}
    assert stripped["m.room.name"]["content"]["name"] == "Synapse invite"
    # Synapse sends full PDUs (S2S invite v2, v1.16); our clients get CS "Stripped state" only.
    for event in dave_sync.invites[room_id]:
        assert set(event) <= {"type", "state_key", "content", "sender"}, event

    await dave.ok("POST", f"/rooms/{room_id}/join", {})
    await eventually(lambda: dave_sync.is_joined(room_id), timeout=FED_TIMEOUT)
    await eventually(lambda: _is(carol, room_id, dave.user_id, "join"), timeout=FED_TIMEOUT)
    await carol.send_text(room_id, "welcome dave")
    await eventually(lambda: dave_sync.has_text(room_id, "welcome dave"), timeout=FED_TIMEOUT)

    await dave.ok("POST", f"/rooms/{room_id}/leave", {})
    await eventually(lambda: _is(carol, room_id, dave.user_id, "leave"), timeout=FED_TIMEOUT)
    await eventually(lambda: dave_sync.has_left(room_id), timeout=FED_TIMEOUT)
    # Carol's messages after the leave no longer reach Ranvier.
    members = await carol.ok("GET", f"/rooms/{room_id}/joined_members")
    assert set(members["joined"]) == {carol.user_id}


@pytest.mark.parametrize("room_version", ROOM_VERSIONS)
async def test_synapse_invites_a_ranvier_user_who_rejects(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession, room_version: str
) -> None:
    erin = await SynapseClient.register_on(session, synapse, f"fed_erin_c_v{room_version}")
    frank = await Client.register(session, ranvier, "frank")
    room_id = await erin.create_room(preset="private_chat", room_version=room_version)
    await erin.ok("POST", f"/rooms/{room_id}/invite", {"user_id": frank.user_id})

    frank_sync = SyncReader(frank)
    await eventually(lambda: frank_sync.is_invited(room_id), timeout=FED_TIMEOUT)
    await frank.ok("POST", f"/rooms/{room_id}/leave", {})
    # The rejection went over make_leave/send_leave and Synapse recorded it in the room.
    await eventually(lambda: _is(erin, room_id, frank.user_id, "leave"), timeout=FED_TIMEOUT)
    await eventually(lambda: frank_sync.has_left(room_id), timeout=FED_TIMEOUT)
    assert room_id not in (await frank.ok("GET", "/joined_rooms"))["joined_rooms"]


@pytest.mark.parametrize("room_version", ROOM_VERSIONS)
async def test_ranvier_invite_rejected_by_a_synapse_user(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession, room_version: str
) -> None:
    gina = await Client.register(session, ranvier, "gina")
    hank = await SynapseClient.register_on(session, synapse, f"fed_hank_d_v{room_version}")
    room_id = await gina.create_room(preset="private_chat", room_version=room_version)
    await gina.ok("POST", f"/rooms/{room_id}/invite", {"user_id": hank.user_id})
    hank_sync = SyncReader(hank)
    await eventually(lambda: hank_sync.is_invited(room_id), timeout=FED_TIMEOUT)
    await hank.ok("POST", f"/rooms/{room_id}/leave", {})
    await eventually(lambda: _is(gina, room_id, hank.user_id, "leave"), timeout=FED_TIMEOUT)


async def _is(client: Client, room_id: str, user_id: str, membership: str) -> bool:
    return await _membership(client, room_id, user_id) == membership


@pytest.mark.parametrize("room_version", ["12", "1"])
async def test_our_read_endpoints_agree_with_synapse(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession, room_version: str
) -> None:
    """Synapse is the reference: for events both servers hold, our /state_ids, /state, /event_auth and
    /event must answer what Synapse's answer (these are what a Synapse peer asks us when it heals a gap
    or resyncs partial state). We ask Synapse as Ranvier, and ask Ranvier as Synapse (with its key)."""
    alice = await Client.register(session, ranvier, "alice")
    bob = await SynapseClient.register_on(session, synapse, f"fed_reads_v{room_version}")
    room_id = await alice.create_room(name="Compared", room_version=room_version)
    await alice.send_text(room_id, "from ranvier")
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=ranvier.server_name)
    await bob.send_text(room_id, "from synapse")
    await eventually(lambda: _has(alice, room_id, "from synapse"), timeout=FED_TIMEOUT)
    events = await alice.messages(room_id)
    join_id = next(e["event_id"] for e in events if e.get("state_key") == bob.user_id)
    message_id = next(e["event_id"] for e in events if e["content"].get("body") == "from synapse")

    as_synapse = make_client(synapse.server_name, synapse.signing_key())
    ours, theirs = ranvier.server_name, synapse.server_name

    async def synapse_has_full_state() -> bool:
        # Synapse joined with partial state (its default) and refuses state reads until its resync is
        # done (403 MSC3895_UNABLE_DUE_TO_PARTIAL_STATE); on a loaded machine that outlasts the message.
        try:
            await ranvier.federation_client.get_state_ids(theirs, room_id, join_id)
        except FederationError as e:
            if e.errcode == "ORG.MATRIX.MSC3895_UNABLE_DUE_TO_PARTIAL_STATE":
                return False
            raise
        return True

    await eventually(synapse_has_full_state, timeout=FED_TIMEOUT, interval=0.2)
    try:
        for event_id in (join_id, message_id):  # a state event (state *before* it) and a message
            mine = await as_synapse.get_state_ids(ours, room_id, event_id)
            ref = await ranvier.federation_client.get_state_ids(theirs, room_id, event_id)
            assert set(mine["pdu_ids"]) == set(ref["pdu_ids"]), event_id
            assert set(mine["auth_chain_ids"]) == set(ref["auth_chain_ids"]), event_id

            mine = await as_synapse.get_state(ours, room_id, event_id)
            ref = await ranvier.federation_client.get_state(theirs, room_id, event_id)
            assert _ids(mine["pdus"], room_version) == _ids(ref["pdus"], room_version)
            assert _ids(mine["auth_chain"], room_version) == _ids(ref["auth_chain"], room_version)

            mine = await as_synapse.get_event_auth(ours, room_id, event_id)
            ref = await ranvier.federation_client.get_event_auth(theirs, room_id, event_id)
            assert _ids(mine["auth_chain"], room_version) == _ids(ref["auth_chain"], room_version)

            (mine_pdu,) = (await as_synapse.get_event(ours, event_id))["pdus"]
            (ref_pdu,) = (await ranvier.federation_client.get_event(theirs, event_id))["pdus"]
            mine_pdu.pop("unsigned", None)
            ref_pdu.pop("unsigned", None)
            assert mine_pdu == ref_pdu
    finally:
        await as_synapse.close()


def _ids(pdus: list[dict], room_version: str) -> set[str]:
    rv = get_room_version(room_version)
    return {Pdu(p, rv).event_id for p in pdus}


async def _has(client: Client, room_id: str, text: str) -> bool:
    return text in await client.texts(room_id)
