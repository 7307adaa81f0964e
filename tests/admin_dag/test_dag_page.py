"""The room-DAG page (ranvier/admin/dag.py): its JSON for a room with a fork tied by a dummy event and a
gap that cannot be filled, the admin check, and the page itself in headless Chromium."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.browser.harness import run_script
from tests.scenarios.servers import eventually
from tests.scenarios.test_inbound_send import Room, room  # noqa: F401 - the fixture


async def _fork_gap_and_dummy(room: Room) -> tuple[list[str], str, str]:  # noqa: F811
    """Twelve branches from one point (the resident ties them with a dummy event), then an event whose
    prev event the remote server will not serve (a gap)."""
    fork_point = room.last
    branches = [room.message(f"branch {i}", prev=fork_point) for i in range(12)]
    await room.send(branches)

    async def healed() -> bool:
        return len(await room.hs.storage.events.get_forward_extremities(room.room_id)) == 1

    await eventually(healed)
    (dummy,) = await room.hs.storage.events.get_forward_extremities(room.room_id)
    hidden = room.message("never served")
    del room.driver.events[hidden.event_id]  # neither /event nor /get_missing_events will find it
    after = room.message("after the gap", prev=hidden)
    assert await room.send([after]) == {after.event_id: {}}
    return [b.event_id for b in branches], dummy, hidden.event_id


async def _get_dag(room: Room, token: str, query: str = "") -> tuple[int, Any]:  # noqa: F811
    url = f"{room.alice.base}/_ranvier/admin/v1/rooms/{room.room_id}/dag{query}"
    async with room.alice.session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json()


async def test_dag_json_shows_the_fork_the_dummy_and_the_gap(room: Room) -> None:  # noqa: F811
    status, body = await _get_dag(room, room.alice.token)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"  # not an admin yet
    await room.hs.storage.users.set_admin(room.alice.user_id, True)
    branches, dummy, hidden = await _fork_gap_and_dummy(room)

    status, body = await _get_dag(room, room.alice.token, "?limit=100")
    assert status == 200, body
    events = {e["event_id"]: e for e in body["events"]}
    assert events[dummy]["type"] == "org.matrix.dummy_event"
    assert sorted(events[dummy]["ties"]) == sorted(branches)
    assert body["missing"] == [hidden]
    assert hidden in body["backward_extremities"]
    assert len(body["forks"]) == 1 and all(events[b]["prev_events"] == body["forks"] for b in branches)
    assert sorted(body["servers"]) == sorted([room.hs.server_name, room.driver.server_name])
    # the newest event is a forward extremity; the branches are not any more
    assert sorted(e for e, v in events.items() if v["forward_extremity"]) == body["forward_extremities"]
    assert not any(events[b]["forward_extremity"] for b in branches)
    create = next(e for e in body["events"] if e["type"] == "m.room.create")
    assert create["state_key"] == "" and create["prev_events"] == []

    # A window around the dummy event holds it and is at most the limit.
    status, around = await _get_dag(room, room.alice.token, f"?limit=6&around={dummy}")
    assert status == 200 and len(around["events"]) <= 6 and dummy in {e["event_id"] for e in around["events"]}
    assert around["more_before"] is True
    status, body = await _get_dag(room, room.alice.token, "?around=$nope")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await _get_dag(room, room.alice.token, "?limit=x")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


async def test_dag_page_in_chromium(room: Room) -> None:  # noqa: F811
    await room.hs.storage.users.set_admin(room.alice.user_id, True)
    branches, dummy, hidden = await _fork_gap_and_dummy(room)
    url = f"{room.alice.base}/_ranvier/admin/rooms/{room.room_id}/dag"
    drawn = await asyncio.to_thread(
        run_script, "dag_page.mjs", "dag_page", {"url": url, "token": room.alice.token, "dummy": dummy}
    )
    assert drawn["errors"] == []
    assert drawn["missing"] == [hidden]
    assert drawn["dummies"] == [dummy]
    assert sorted(drawn["dummy_incoming"]) == sorted(branches)
    assert drawn["summary"]["gaps"] == "1" and drawn["summary"]["forks"] == "1"
    assert drawn["layered"] is True
    assert "org.matrix.dummy_event" in drawn["details"]
    # The driver cannot take transactions, so the check from the page says it lacks our dummy event.
    assert drawn["check"].startswith("DIFFERS") and dummy in drawn["check"]
