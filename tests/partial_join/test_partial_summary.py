"""/sync's room summary while a room's state is partial: the joined member count is the room's (the
resident's count, asked with GET /hierarchy just after the join, moved by the member changes received
since), not the few members the partial state holds; the heroes are those the resident sent with the
send_join answer (a room without a name or alias), the same as a full join would show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually, start_server

from .helpers import JOINER_ROOMS, Gate, fill_room, lazy_sync

MEMBERS = 40
SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"


async def test_summary_counts_the_room_while_partial(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False}, **JOINER_ROOMS)
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room()  # no name, no alias: the summary has heroes
    await fill_room(a, room_id, MEMBERS)
    gate = Gate(b)
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    assert await b.storage.partial_state.is_partial(room_id)
    held, _ = await b.storage.state.get_member_counts(room_id)
    assert held < 10  # the partial state: heroes, alice, bob

    async def summary() -> dict[str, Any]:
        return dict((await lazy_sync(bob))["rooms"]["join"][room_id]["summary"])

    async def counted(n: int) -> bool:
        return (await summary())["m.joined_member_count"] == n

    await eventually(lambda: counted(MEMBERS + 2), timeout=20)  # alice, the members, bob
    heroes = [u for u, _ in await a.storage.state.get_hero_members(room_id, exclude=bob.user_id)]
    assert (await summary())["m.heroes"] == heroes and len(heroes) == 5
    # Simplified sliding sync (MSC4186) counts the same (a list lazy-loading members has the room).
    lists = {"l": {"ranges": [[0, 9]], "required_state": [["m.room.member", "$LAZY"]], "timeline_limit": 1}}
    async with session.post(
        f"http://127.0.0.1:{b.ports['client']}{SLIDING}",
        json={"lists": lists},
        headers={"Authorization": f"Bearer {bob.token}"},
    ) as resp:
        sliding = await resp.json()
        assert resp.status == 200, sliding
    assert sliding["rooms"][room_id]["joined_count"] == MEMBERS + 2

    # A member joins while B is partial: the count follows.
    carol = await Client.register(session, a, "carol")
    await carol.ok("POST", f"/join/{room_id}", {})
    await eventually(lambda: counted(MEMBERS + 3), timeout=20)

    gate.open()
    assert len((await bob.ok("GET", f"/rooms/{room_id}/joined_members"))["joined"]) == MEMBERS + 3
    assert not await b.storage.partial_state.is_partial(room_id)
    assert (await summary())["m.joined_member_count"] == MEMBERS + 3
