"""Notification counts in /sync from push rules evaluated at persist time (CS "Push Notifications",
"Receipts"): mentions, one-to-one rooms, keywords, threads, read receipts clearing counts, and an event
from another server counted on the receiving one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually, start_server
from tests.scenarios.test_postgres_federation import pg_databases

__all__ = ["pg_databases"]  # the fixture, imported for this module's tests


async def unread(client: Client, room_id: str, threads: bool = False) -> dict[str, Any]:
    """The room's unread counts from a fresh (initial) sync."""
    params: dict[str, str] = {"timeout": "0"}
    if threads:
        params["filter"] = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})
    body = await client.ok("GET", "/sync", **params)
    room = body["rooms"]["join"][room_id]
    out = {"room": room["unread_notifications"]}
    if threads:
        out["threads"] = room["unread_thread_notifications"]
    return out


def n(notify: int, highlight: int) -> dict[str, int]:
    return {"notification_count": notify, "highlight_count": highlight}


async def send(client: Client, room_id: str, content: dict[str, Any]) -> str:
    txn = f"t{len(json.dumps(content))}-{id(content)}"
    answer = await client.ok("PUT", f"/rooms/{room_id}/send/m.room.message/{txn}", content)
    return str(answer["event_id"])


async def test_mentions_keywords_dms_threads_and_receipts(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    hs = await start_server(tmp_path / "a")
    servers.append(hs)
    await _counts_scenario(hs, session)


async def test_counts_on_postgres(
    tmp_path: Path, pg_databases: list[str], servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    hs = await start_server(tmp_path / "a", database_url=pg_databases[0])
    servers.append(hs)
    await _counts_scenario(hs, session)


async def _counts_scenario(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    carol = await Client.register(session, hs, "carol")
    room = await alice.create_room(name="Group")
    await bob.ok("POST", f"/join/{room}", {})
    await carol.ok("POST", f"/join/{room}", {})
    assert (await unread(bob, room))["room"] == n(0, 0)  # membership events never notify

    await alice.send_text(room, "hello everyone")
    assert (await unread(bob, room))["room"] == n(1, 0)
    assert (await unread(alice, room))["room"] == n(0, 0)  # not for one's own events

    mention = {"msgtype": "m.text", "body": "bob: look", "m.mentions": {"user_ids": [bob.user_id]}}
    await send(alice, room, mention)
    assert (await unread(bob, room))["room"] == n(2, 1)
    assert (await unread(carol, room))["room"] == n(2, 0)

    # A keyword (content rule) of Carol's highlights for her only.
    await carol.ok(
        "PUT",
        "/pushrules/global/content/lunch",
        {"pattern": "lunch", "actions": ["notify", {"set_tweak": "highlight"}]},
    )
    last = await alice.send_text(room, "Lunch at noon?")
    assert (await unread(carol, room))["room"] == n(3, 1)
    assert (await unread(bob, room))["room"] == n(3, 1)

    # Bob's read receipt clears his counts, not Carol's; a private one clears Carol's.
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{last}", {})
    assert (await unread(bob, room))["room"] == n(0, 0)
    assert (await unread(carol, room))["room"] == n(3, 1)
    await carol.ok("POST", f"/rooms/{room}/receipt/m.read.private/{last}", {})
    assert (await unread(carol, room))["room"] == n(0, 0)

    # Threads: counted under the root, cleared by a receipt in that thread only.
    root = await alice.send_text(room, "a thread root")
    reply = {
        "msgtype": "m.text",
        "body": "in the thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root},
    }
    in_thread = await send(alice, room, reply)
    assert (await unread(bob, room))["room"] == n(2, 0)
    split = await unread(bob, room, threads=True)
    assert split == {"room": n(1, 0), "threads": {root: n(1, 0)}}
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{in_thread}", {"thread_id": root})
    assert await unread(bob, room, threads=True) == {"room": n(1, 0), "threads": {}}
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{root}", {"thread_id": "main"})
    assert await unread(bob, room, threads=True) == {"room": n(0, 0), "threads": {}}

    # A two-member room: every message notifies (.m.rule.room_one_to_one); an edit does not.
    dm = await alice.create_room(preset="private_chat", invite=[bob.user_id], is_direct=True)
    await bob.ok("POST", f"/join/{dm}", {})
    first = await alice.send_text(dm, "psst")
    edit = {
        "msgtype": "m.text",
        "body": "* psst!",
        "m.new_content": {"msgtype": "m.text", "body": "psst!"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": first},
    }
    edit_id = await send(alice, dm, edit)
    assert (await unread(bob, dm))["room"] == n(1, 0)
    actions = await hs.storage.push_actions.notifications(bob.user_id, None, 10, False)
    in_dm = [a.event_id for a in actions if a.room_id == dm]
    # newest first: the message, then the invite (.m.rule.invite_for_me), which the join put behind him
    assert len(in_dm) == 2 and in_dm[0] == first and edit_id not in in_dm
    assert {"set_tweak": "sound", "value": "default"} in actions[0].actions

    # An ignored user's messages do not notify.
    await bob.ok(
        "PUT", f"/user/{bob.user_id}/account_data/m.ignored_user_list", {"ignored_users": {alice.user_id: {}}}
    )
    await alice.send_text(dm, "ignored?")
    assert (await unread(bob, dm))["room"] == n(1, 0)
    await bob.ok("PUT", f"/user/{bob.user_id}/account_data/m.ignored_user_list", {"ignored_users": {}})

    # The master rule enabled: nothing notifies any more.
    await bob.ok("PUT", "/pushrules/global/override/.m.rule.master/enabled", {"enabled": True})
    await alice.send_text(dm, "anyone?")
    assert (await unread(bob, dm))["room"] == n(1, 0)


async def test_event_from_another_server_is_counted(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room = await alice.create_room(name="Across")
    await bob.ok("POST", f"/join/{room}", {}, server_name=a.server_name)
    mention = {"msgtype": "m.text", "body": "hi bob", "m.mentions": {"user_ids": [bob.user_id]}}
    event_id = await send(alice, room, mention)

    async def counted() -> bool:
        body = await bob.ok("GET", "/sync", timeout="0")
        joined = body["rooms"]["join"].get(room)
        return joined is not None and joined["unread_notifications"] == n(1, 1)

    await eventually(counted, timeout=20)
    assert [x.event_id for x in await b.storage.push_actions.notifications(bob.user_id, None, 10, True)] == [
        event_id
    ]

    # Invites from A to a user of B: into the room B is in (it arrives in the room's history) and into
    # one B is not in (kept out of band); each notifies her (.m.rule.invite_for_me).
    carol = await Client.register(session, b, "carol")
    elsewhere = await alice.create_room(name="Elsewhere")
    await alice.ok("POST", f"/rooms/{room}/invite", {"user_id": carol.user_id})
    await alice.ok("POST", f"/rooms/{elsewhere}/invite", {"user_id": carol.user_id})

    async def both_invites_listed() -> bool:
        listed = await carol.ok("GET", "/notifications")
        invites = [
            n["room_id"]
            for n in listed["notifications"]
            if n["event"]["type"] == "m.room.member"
            and n["event"]["state_key"] == carol.user_id
            and "notify" in n["actions"]
        ]
        return sorted(invites) == sorted([room, elsewhere])

    await eventually(both_invites_listed, timeout=20)
