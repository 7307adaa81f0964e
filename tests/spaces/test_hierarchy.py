"""Spaces (CS and S2S "GET /hierarchy") and room summaries (CS "GET /room_summary", MSC3266) between two
in-process Ranvier servers: local rooms, a child room only the other server is in (asked over federation),
visibility, the spec's order of children, suggested_only, max_depth and pagination."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, start_server

V1 = "/_matrix/client/v1"


async def _get(client: Client, path: str, **params: Any) -> tuple[int, Any]:
    async with client.session.get(
        f"http://127.0.0.1:{client.hs.ports['client']}{path}",
        params=params or None,
        headers={"Authorization": f"Bearer {client.token}"} if client.token else {},
    ) as resp:
        return resp.status, await resp.json()


async def _child(owner: Client, space: str, child: str, via: str, **content: Any) -> None:
    await owner.ok("PUT", f"/rooms/{space}/state/m.space.child/{child}", {"via": [via], **content})


async def _walk(client: Client, space: str, **params: Any) -> list[str]:
    status, body = await _get(client, f"{V1}/rooms/{space}/hierarchy", **params)
    assert status == 200, body
    return [r["room_id"] for r in body["rooms"]]


async def test_hierarchy_local_remote_visibility_and_order(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    carol = await Client.register(session, a, "carol")
    bob = await Client.register(session, b, "bob")
    here = a.server_name

    space = await alice.create_room(name="Space", creation_content={"type": "m.space"}, room_version="10")
    public = await alice.create_room(name="Public", topic="all welcome")
    secret = await alice.create_room(preset="private_chat", name="Secret")
    subspace = await alice.create_room(name="Sub", creation_content={"type": "m.space"})
    deep = await alice.create_room(name="Deep")
    remote = await bob.create_room(name="Bob's room")
    # Ordered: "a" before "b" (order keys first), then no order, by timestamp (the remote one, then secret).
    await _child(alice, space, subspace, here, order="b")
    await _child(alice, space, public, here, order="a", suggested=True)
    await _child(alice, space, remote, b.server_name)
    await _child(alice, space, secret, here, order="\x01 not valid")
    await _child(alice, space, "!gone:nowhere.invalid", here)  # a child nobody can tell us about
    await alice.ok("PUT", f"/rooms/{space}/state/m.space.child/!novia:x", {})  # no via: not a child
    await _child(alice, subspace, deep, here)

    # Alice is in every room of hers: depth first, the spec's order, the remote room asked of b.
    assert await _walk(alice, space) == [space, public, subspace, deep, remote, secret]
    status, body = await _get(alice, f"{V1}/rooms/{space}/hierarchy")
    by_id = {r["room_id"]: r for r in body["rooms"]}
    root = by_id[space]
    assert root["room_type"] == "m.space" and root["name"] == "Space" and root["room_version"] == "10"
    children = [public, subspace, remote, secret, "!gone:nowhere.invalid"]
    assert [c["state_key"] for c in root["children_state"]] == children
    assert all("origin_server_ts" in c and c["type"] == "m.space.child" for c in root["children_state"])
    assert by_id[public]["topic"] == "all welcome" and by_id[public]["children_state"] == []
    assert by_id[remote]["name"] == "Bob's room" and by_id[remote]["num_joined_members"] == 1
    assert by_id[public]["num_joined_members"] == 1 and by_id[public]["join_rule"] == "public"

    # Carol is in none of them: the invite-only room is left out, the public ones shown.
    assert await _walk(carol, space) == [space, public, subspace, deep, remote]
    # suggested_only and max_depth.
    assert await _walk(carol, space, suggested_only="true") == [space, public]
    assert await _walk(carol, space, max_depth="0") == [space]
    assert await _walk(carol, space, max_depth="1") == [space, public, subspace, remote]

    # Pages of one room each add up to the whole walk; parameters cannot change on the way.
    pages: list[str] = []
    params: dict[str, Any] = {"limit": "1"}
    for _ in range(10):
        status, body = await _get(carol, f"{V1}/rooms/{space}/hierarchy", **params)
        assert status == 200, body
        assert len(body["rooms"]) == 1 or "next_batch" not in body  # the last page may find nothing
        pages += [r["room_id"] for r in body["rooms"]]
        if "next_batch" not in body:
            break
        params = {"limit": "1", "from": body["next_batch"]}
        if len(pages) == 2:
            status, bad = await _get(carol, f"{V1}/rooms/{space}/hierarchy", suggested_only="true", **params)
            assert (status, bad["errcode"]) == (400, "M_INVALID_PARAM"), bad
    assert pages == [space, public, subspace, deep, remote]
    for bad_params in ({"limit": "0"}, {"max_depth": "-1"}, {"suggested_only": "yes"}, {"from": "nonsense"}):
        status, bad = await _get(carol, f"{V1}/rooms/{space}/hierarchy", **bad_params)
        assert (status, bad["errcode"]) == (400, "M_INVALID_PARAM"), (bad_params, bad)

    # The secret room itself: 403 for carol, who may not see it.
    status, body = await _get(carol, f"{V1}/rooms/{secret}/hierarchy")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body

    # S2S served by a: b's view (no user of b anywhere): the invite-only child is inaccessible.
    answer = await b.federation_client.hierarchy(a.server_name, space, False)
    assert answer["room"]["room_id"] == space
    assert [c["state_key"] for c in answer["room"]["children_state"]] == children
    assert {c["room_id"] for c in answer["children"]} == {public, subspace}
    assert answer["inaccessible_children"] == [secret]
    suggested = await b.federation_client.hierarchy(a.server_name, space, True)
    assert [c["room_id"] for c in suggested["children"]] == [public]
    status_error = None
    try:
        await b.federation_client.hierarchy(a.server_name, secret, False)
    except Exception as e:  # FederationError with the answer's status
        status_error = getattr(e, "status", None)
    assert status_error == 404


async def test_room_summary_local_remote_and_unauthenticated(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    carol = await Client.register(session, a, "carol")
    bob = await Client.register(session, b, "bob")
    public = await alice.create_room(name="Cheese", topic="tasty", room_alias_name="cheese")
    secret = await alice.create_room(preset="private_chat", name="Secret")
    alias = f"#cheese:{a.server_name}"

    for path in (
        f"{V1}/room_summary/{quote(alias)}",
        f"/_matrix/client/unstable/im.nheko.summary/rooms/{quote(alias)}/summary",
        f"/_matrix/client/unstable/im.nheko.summary/summary/{quote(public)}",
    ):
        status, body = await _get(carol, path)
        assert status == 200, (path, body)
        assert body["room_id"] == public and body["name"] == "Cheese" and body["topic"] == "tasty"
        assert body["canonical_alias"] == alias and body["membership"] == "leave"
        assert body["join_rule"] == "public" and body["num_joined_members"] == 1
    status, body = await _get(alice, f"{V1}/room_summary/{quote(secret)}")
    assert status == 200 and body["membership"] == "join" and body["join_rule"] == "invite", body
    status, body = await _get(carol, f"{V1}/room_summary/{quote(secret)}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), body

    # Unauthenticated: public rooms only, and no membership.
    anonymous = Client(session, a, "", "")
    status, body = await _get(anonymous, f"{V1}/room_summary/{quote(public)}")
    assert status == 200 and "membership" not in body, body
    status, body = await _get(anonymous, f"{V1}/room_summary/{quote(secret)}")
    assert status == 404, body

    # Over federation: b is in neither room; the alias names a, and via names it for the room id.
    status, body = await _get(bob, f"{V1}/room_summary/{quote(alias)}")
    assert status == 200 and body["name"] == "Cheese" and body["membership"] == "leave", body
    status, body = await _get(bob, f"{V1}/room_summary/{quote(secret)}", via=a.server_name)
    assert status == 404, body

    # A v12 room id names no server: after a knock (or an invite), the summary is asked of the servers the
    # knock's stripped state came from, without a via.
    rules = {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
    door = await alice.create_room(
        preset="private_chat",
        name="Door",
        room_version="12",
        initial_state=[rules],
        creation_content={"type": "m.space"},
    )
    await alice.ok("PUT", f"/rooms/{door}/state/m.space.child/{public}", {"via": [a.server_name]})
    status, body = await _get(bob, f"{V1}/room_summary/{quote(door)}")
    assert status == 404, body
    await bob.ok("POST", f"/knock/{quote(door)}", {}, via=a.server_name)
    status, body = await _get(bob, f"{V1}/room_summary/{quote(door)}")
    assert status == 200 and body["name"] == "Door" and body["membership"] == "knock", body
    # And the space's hierarchy (a client previewing the space): the root and its public child.
    assert await _walk(bob, door) == [door, public]


async def test_restricted_and_knockable_children(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    servers.append(a)
    alice = await Client.register(session, a, "alice")
    carol = await Client.register(session, a, "carol")
    dave = await Client.register(session, a, "dave")
    here = a.server_name
    space = await alice.create_room(name="Space", creation_content={"type": "m.space"}, room_version="10")
    allow = [{"type": "m.room_membership", "room_id": space}]
    restricted = await alice.create_room(
        preset="private_chat",
        name="Members only",
        room_version="10",
        initial_state=[
            {
                "type": "m.room.join_rules",
                "state_key": "",
                "content": {"join_rule": "restricted", "allow": allow},
            }
        ],
    )
    knockable = await alice.create_room(
        preset="private_chat",
        name="Knock first",
        room_version="10",
        initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
    )
    for child in (restricted, knockable):
        await alice.ok("PUT", f"/rooms/{space}/state/m.space.child/{child}", {"via": [here]})

    # Carol is in the space, so she may join the restricted room; dave is not: he sees only what he could
    # knock on. Everyone may see the knockable room.
    await carol.ok("POST", f"/join/{space}", {})
    assert await _walk(carol, space) == [space, restricted, knockable]
    assert await _walk(dave, space) == [space, knockable]
    status, body = await _get(carol, f"{V1}/rooms/{space}/hierarchy")
    chunk = next(r for r in body["rooms"] if r["room_id"] == restricted)
    assert chunk["join_rule"] == "restricted" and chunk["allowed_room_ids"] == [space]
    # The same for the room summary.
    assert (await _get(carol, f"{V1}/room_summary/{quote(restricted)}"))[0] == 200
    assert (await _get(dave, f"{V1}/room_summary/{quote(restricted)}"))[0] == 404
    status, body = await _get(dave, f"{V1}/room_summary/{quote(knockable)}")
    assert status == 200 and body["join_rule"] == "knock" and body["membership"] == "leave", body
