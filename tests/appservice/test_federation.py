"""An invite from another server for a bridge's user (an outlier on the bridge's server) is pushed to the
bridge, and so are the room's events once the puppet joined over federation; the invite is pushed once,
also when the room's history later brings it in as an event of the timeline (it is the prev event of the
puppet's join: a gap filled or missing events fetched give it its place in the room)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from mautrix.types import UserID

from ranvier.storage.interfaces import EventToPersist
from tests.appservice.harness import Bridge, start_homeserver, wait_until, write_config
from tests.scenarios.servers import Client, start_server


async def test_remote_invite_and_room_events_reach_the_bridge(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    config, as_port = write_config(tmp_path / "a", tls=True)
    hs_a = await start_homeserver(config)
    hs_b = await start_server(tmp_path / "b")
    bridge = Bridge(
        f"http://127.0.0.1:{hs_a.ports['client']}", hs_a.server_name, as_port, tmp_path / "mx.json"
    )
    await bridge.start()
    try:
        # A full join: a partial-state resync would bring the invite in through storage alone (no hooks),
        # and whether it comes first would decide what this test looks at.
        hs_a.remote_membership.partial_state_joins = False
        async with aiohttp.ClientSession() as session:
            puppet = bridge.appservice.intent.user(UserID(f"@bridge_remote:{hs_a.server_name}"))
            await puppet.ensure_registered()
            bob = await Client.register(session, hs_b, "bob")
            room_id = await bob.create_room()
            await bob.ok("POST", f"/rooms/{room_id}/invite", {"user_id": puppet.mxid})

            def invites() -> list[str]:
                return [
                    str(e.event_id)
                    for e in bridge.received
                    if str(e.type) == "m.room.member"
                    and str(e.state_key) == puppet.mxid
                    and str(e.content.membership) == "invite"
                ]

            await wait_until(lambda: bool(invites()), "the remote invite pushed", timeout=120)
            await puppet.join_room(room_id, servers=[hs_b.server_name])
            text = await bob.send_text(room_id, "hello across servers")
            await wait_until(lambda: text in bridge.event_ids(), "bob's message pushed", timeout=120)
            assert len(invites()) == 1

            # The room's history brings the invite in (it is the prev event of the puppet's join): the
            # join's catch-up may have done so already; if not, as the gap filler or a missing-events
            # fetch does: persisted again, with the state before it, so it is no longer an outlier.
            (invite_id,) = invites()
            if invite_id not in await hs_a.storage.events.held_in_timeline([invite_id]):
                invite = await hs_a.storage.events.get_event(invite_id)
                assert invite is not None
                state = await hs_b.storage.state.get_state_ids_before(invite_id)
                async with hs_a.persister.room_lock(room_id):
                    await hs_a.persister.persist(
                        room_id, invite.room_version, [EventToPersist(pdu=invite, state_before=state)]
                    )
            assert invite_id in await hs_a.storage.events.held_in_timeline([invite_id])
            later = await bob.send_text(room_id, "after the invite found its place")
            await wait_until(lambda: later in bridge.event_ids(), "bob's second message pushed", timeout=120)
            assert len(invites()) == 1  # twice on the old code: pushed again when it left the outliers
    finally:
        await bridge.stop()
        await hs_b.stop()
        await hs_a.stop()
