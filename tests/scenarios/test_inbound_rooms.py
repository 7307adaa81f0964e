"""Inbound federation beyond the happy path: gaps healed with the remote's state, soft failure, server
ACLs, EDUs, and Ranvier's own read endpoints as a remote server sees them."""

from __future__ import annotations

import pytest

from ranvier.federation.client import FederationError, path_segment

from .test_inbound_send import Room, bodies, room  # noqa: F401 - the fixture


async def test_a_gap_beyond_get_missing_events_is_filled_with_the_state_from_the_origin(room: Room) -> None:  # noqa: F811
    chain = [room.message(f"g{i}") for i in range(46)]
    tip = room.message("tip")
    assert await room.send([tip]) == {tip.event_id: {}}
    served = room.driver.served
    # /get_missing_events (asked before the room lock, incoming.PREFETCH_ROUNDS rounds of 20, and under it
    # for what was left) does not reach back to Bob's join: the state at the gap comes from /state_ids and
    # the event before the gap (an outlier now) from /event. What lies before it is backfill's job.
    assert served["get_missing_events"] >= 1 and served["state_ids"] == 1 and served["event"] == 1
    timeline = bodies(await room.alice.messages(room.room_id))
    first = int(timeline[0][1:])
    assert timeline == [f"g{i}" for i in range(first, 46)] + ["tip"] and first <= 26
    meta = await room.hs.storage.events.get_event_meta(chain[first - 1].event_id)
    assert meta is not None and meta.outlier
    assert await room.hs.storage.events.have_events([chain[first - 2].event_id]) == set()
    # Bob's join stays an extremity too: nothing live links it to g6 while g0..g5 are missing.
    join = room.state[("m.room.member", room.bob)].event_id
    assert await room.hs.storage.events.get_forward_extremities(room.room_id) == sorted([join, tip.event_id])


async def test_an_event_evading_a_ban_is_soft_failed(room: Room) -> None:  # noqa: F811
    before_ban = room.message("before the ban")
    assert await room.send([before_ban]) == {before_ban.event_id: {}}
    status, body = await room.alice.call(
        "POST", f"/_matrix/client/v3/rooms/{room.room_id}/ban", {"user_id": room.bob, "reason": "spam"}
    )
    assert status == 200, body
    # Bob's server has not seen the ban: it builds on its own last event, where Bob is still joined.
    evading = room.message("evading", prev=before_ban)
    assert await room.send([evading]) == {evading.event_id: {}}
    meta = await room.hs.storage.events.get_event_meta(evading.event_id)
    assert meta is not None and meta.soft_failed and meta.rejected_reason is None
    assert bodies(await room.alice.messages(room.room_id)) == ["before the ban"]
    assert evading.event_id not in await room.hs.storage.events.get_forward_extremities(room.room_id)


async def test_server_acl_denies_pdus_and_reads(room: Room) -> None:  # noqa: F811
    hs_name, client = room.hs.server_name, room.driver.fed.client
    await client.get_state_ids(hs_name, room.room_id, room.last.event_id)  # allowed so far
    acl = {"allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": True}
    status, body = await room.alice.call(
        "PUT", f"/_matrix/client/v3/rooms/{room.room_id}/state/m.room.server_acl", acl
    )
    assert status == 200, body
    pdu = room.message("denied")
    result = await room.send([pdu])
    assert "server ACL" in result[pdu.event_id]["error"]
    assert await room.hs.storage.events.have_events([pdu.event_id]) == set()
    for call in (
        client.get_state_ids(hs_name, room.room_id, room.last.event_id),
        client.get_event_auth(hs_name, room.room_id, room.last.event_id),
        client.backfill(hs_name, room.room_id, [room.last.event_id], 5),
    ):
        with pytest.raises(FederationError) as e:
            await call
        assert e.value.status == 403 and e.value.errcode == "M_FORBIDDEN"


async def test_typing_and_receipts(room: Room) -> None:  # noqa: F811
    pdu = room.message("read me")
    typing = {
        "edu_type": "m.typing",
        "content": {"room_id": room.room_id, "user_id": room.bob, "typing": True},
    }
    forged_typing = {
        "edu_type": "m.typing",
        "content": {"room_id": room.room_id, "user_id": room.alice.user_id, "typing": True},
    }
    receipt = {
        "edu_type": "m.receipt",
        "content": {room.room_id: {"m.read": {room.bob: {"event_ids": [pdu.event_id], "data": {"ts": 1}}}}},
    }
    unknown = {"edu_type": "org.example.whatever", "content": {"x": 1}}
    assert await room.send([pdu], edus=[typing, forged_typing, receipt, unknown, {"bad": True}]) == {
        pdu.event_id: {}
    }
    assert room.hs.typing.typing_users(room.room_id) == [room.bob]
    stored = await room.hs.storage.receipts.get_receipt(room.room_id, "m.read", room.bob)
    assert stored is not None and stored.event_id == pdu.event_id and stored.data == {"ts": 1}
    stop = {
        "edu_type": "m.typing",
        "content": {"room_id": room.room_id, "user_id": room.bob, "typing": False},
    }
    await room.send([], edus=[stop])
    assert room.hs.typing.typing_users(room.room_id) == []


async def test_read_endpoints_walk_the_dag(room: Room) -> None:  # noqa: F811
    pdus = [room.message(f"r{i}") for i in range(6)]
    assert await room.send(pdus) == {p.event_id: {} for p in pdus}
    hs_name, client = room.hs.server_name, room.driver.fed.client

    missing = await client.get_missing_events(
        hs_name, room.room_id, earliest_events=[pdus[1].event_id], latest_events=[pdus[5].event_id], limit=10
    )
    assert [e["content"]["body"] for e in missing["events"]] == ["r2", "r3", "r4"]

    back = await client.backfill(hs_name, room.room_id, [pdus[5].event_id], 3)
    assert [e["content"]["body"] for e in back["pdus"]] == ["r5", "r4", "r3"]

    auth = await client.get_event_auth(hs_name, room.room_id, pdus[5].event_id)
    types = {e["type"] for e in auth["auth_chain"]}
    # v12 events do not cite the create event (the room id implies it), so it is not in the chain.
    assert {"m.room.member", "m.room.power_levels", "m.room.join_rules"} <= types

    state = await client.get_state(hs_name, room.room_id, pdus[5].event_id)
    keys = {(e["type"], e.get("state_key")) for e in state["pdus"]}
    assert ("m.room.member", room.bob) in keys and ("m.room.join_rules", "") in keys

    found = await client.timestamp_to_event(hs_name, room.room_id, pdus[3].origin_server_ts, "f")
    assert found["origin_server_ts"] >= pdus[3].origin_server_ts
    found = await client.timestamp_to_event(hs_name, room.room_id, pdus[3].origin_server_ts, "b")
    assert found["origin_server_ts"] <= pdus[3].origin_server_ts
    with pytest.raises(FederationError) as e:
        await client.timestamp_to_event(hs_name, room.room_id, 2**62, "f")
    assert e.value.status == 404

    with pytest.raises(FederationError) as e:
        await client.get_event(hs_name, "$" + "B" * 43)
    assert e.value.status == 404 and e.value.errcode == "M_NOT_FOUND"
    with pytest.raises(FederationError) as e:
        await client.request("GET", hs_name, "/_matrix/federation/v1/no_such_thing/" + path_segment("x"))
    assert e.value.status == 404 and e.value.errcode == "M_UNRECOGNIZED"


async def test_profile_and_directory_queries(room: Room) -> None:  # noqa: F811
    hs_name, client = room.hs.server_name, room.driver.fed.client
    status, body = await room.alice.call(
        "PUT", f"/_matrix/client/v3/profile/{room.alice.user_id}/displayname", {"displayname": "Alice"}
    )
    assert status == 200, body
    assert await client.query_profile(hs_name, room.alice.user_id) == {"displayname": "Alice"}
    with pytest.raises(FederationError) as e:
        await client.query_profile(hs_name, f"@nobody:{hs_name}")
    assert e.value.status == 404
    alias = f"#lobby:{hs_name}"
    status, body = await room.alice.call(
        "PUT", f"/_matrix/client/v3/directory/room/{path_segment(alias)}", {"room_id": room.room_id}
    )
    assert status == 200, body
    answer = await client.query_directory(hs_name, alias)
    assert answer["room_id"] == room.room_id and answer["servers"][0] == hs_name
