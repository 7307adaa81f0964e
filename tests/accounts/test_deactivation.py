"""Deactivation across two servers: every room left (local and federated, the leave reaching the other
server), pending invites rejected (a remote one over make_leave/send_leave), the account locked; erasure
hiding the user's messages from later joiners, local and remote; profiles carried by joins and invites."""

from __future__ import annotations

from typing import Any

import pytest

from tests.accounts.conftest import Pair
from tests.accounts.test_account_api import login, password_auth, password_of
from tests.scenarios.servers import Client, eventually

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def membership_of(client: Client, room_id: str, user_id: str) -> dict[str, Any] | None:
    status, content = await client.call("GET", f"/rooms/{room_id}/state/m.room.member/{user_id}")
    return content if status == 200 else None


async def deactivate(client: Client, name: str, **body: Any) -> dict[str, Any]:
    status, challenge = await client.call("POST", "/account/deactivate", body)
    assert status == 401 and challenge["flows"] == [{"stages": ["m.login.password"]}]
    body["auth"] = password_auth(client.user_id, password_of(name), challenge["session"])
    return dict(await client.ok("POST", "/account/deactivate", body))


async def test_deactivation_leaves_every_room_and_rejects_invites(pair: Pair) -> None:
    alice = await pair.register(pair.a, "deacalice")
    await alice.ok("PUT", f"/profile/{alice.user_id}/displayname", {"displayname": "Alice of A"})
    carol = await pair.register(pair.a, "deaccarol")
    bob = await pair.register(pair.b, "deacbob")

    # A room on the other server, joined over federation: the join carries alice's profile.
    fed_room = await bob.create_room()
    await alice.ok("POST", f"/join/{fed_room}", {}, server_name=pair.b.server_name)

    async def joined_on_b() -> bool:
        member = await membership_of(bob, fed_room, alice.user_id)
        return member is not None and member["membership"] == "join"

    await eventually(joined_on_b, timeout=20)
    assert (await membership_of(bob, fed_room, alice.user_id) or {})["displayname"] == "Alice of A"
    # A local room, with the creator's join carrying a profile too.
    local_room = await carol.create_room()
    assert (await membership_of(carol, local_room, carol.user_id) or {})["displayname"] == "deaccarol"
    await alice.ok("POST", f"/join/{local_room}", {})

    # Pending invites, remote and local: both carry the invitee's profile.
    remote_invite = await bob.create_room(preset="private_chat")
    await bob.ok("POST", f"/rooms/{remote_invite}/invite", {"user_id": alice.user_id})
    local_invite = await carol.create_room(preset="private_chat")
    await carol.ok("POST", f"/rooms/{local_invite}/invite", {"user_id": alice.user_id})
    for client, room in ((bob, remote_invite), (carol, local_invite)):
        invite = await membership_of(client, room, alice.user_id)
        assert invite is not None and invite["membership"] == "invite"
        assert invite["displayname"] == "Alice of A"

    await alice.ok("PUT", f"/user/{alice.user_id}/account_data/m.direct", {bob.user_id: [fed_room]})
    openid = await alice.ok("POST", f"/user/{alice.user_id}/openid/request_token", {})
    answer = await deactivate(alice, "deacalice")
    assert answer == {"id_server_unbind_result": "success"}

    # Every membership is now a leave, on both servers.
    for room in (local_room, local_invite):
        assert (await membership_of(carol, room, alice.user_id) or {}).get("membership") == "leave"

    async def left_on_b() -> bool:
        for room in (fed_room, remote_invite):
            member = await membership_of(bob, room, alice.user_id)
            if member is None or member["membership"] != "leave":
                return False
        return True

    await eventually(left_on_b, timeout=20)

    # The account is locked: token gone, login refused as deactivated, the name not for anyone else.
    status, error = await alice.call("GET", "/account/whoami")
    assert status == 401 and error["errcode"] == "M_UNKNOWN_TOKEN"
    status, error = await login(pair, pair.a, alice.user_id, password_of("deacalice"))
    assert status == 403 and error["errcode"] == "M_USER_DEACTIVATED"
    register = {"username": "deacalice", "password": "another", "auth": {"type": "m.login.dummy"}}
    status, error = await pair.request(pair.a, "POST", "/_matrix/client/v3/register", register)
    assert status == 400 and error["errcode"] == "M_USER_IN_USE"
    assert await carol.ok("GET", f"/profile/{alice.user_id}") == {}
    assert await pair.a.storage.devices.list_devices(alice.user_id) == []
    assert await pair.a.storage.account_data.get_all_global(alice.user_id) == {}
    userinfo = f"https://{pair.a.server_name}/_matrix/federation/v1/openid/userinfo"
    async with pair.session.get(userinfo, params={"access_token": openid["access_token"]}, ssl=False) as resp:
        assert resp.status == 401


async def texts_by(client: Client, room_id: str, sender: str) -> list[Any]:
    events = await client.messages(room_id)
    return [
        e["content"].get("body") for e in events if e["sender"] == sender and e["type"] == "m.room.message"
    ]


async def test_erasure_hides_messages_from_later_joiners(pair: Pair) -> None:
    owner = await pair.register(pair.a, "eraseowner")
    eve = await pair.register(pair.a, "eraseeve")
    kept = await pair.register(pair.a, "erasekept")
    room = await owner.create_room()  # public_chat: history "shared"
    await eve.ok("POST", f"/join/{room}", {})
    await eve.send_text(room, "words to forget")
    await kept.ok("POST", f"/join/{room}", {})
    await kept.send_text(room, "words to keep")

    await deactivate(eve, "eraseeve", erase=True)
    await deactivate(kept, "erasekept")  # no erase: stays readable

    # Those who were in the room still read it whole.
    assert await texts_by(owner, room, eve.user_id) == ["words to forget"]
    # A later joiner on this server sees it redacted; the non-erased user's message stays.
    late = await pair.register(pair.a, "eraselate")
    await late.ok("POST", f"/join/{room}", {})
    assert await texts_by(late, room, eve.user_id) == [None]
    assert await texts_by(late, room, kept.user_id) == ["words to keep"]

    # A later joiner on another server: the history it fetches has the message redacted.
    remote = await pair.register(pair.b, "eraseremote")
    await remote.ok("POST", f"/join/{room}", {}, server_name=pair.a.server_name)

    async def history_reached_b() -> bool:
        return len(await texts_by(remote, room, kept.user_id)) == 1

    await eventually(history_reached_b, timeout=20)
    assert await texts_by(remote, room, eve.user_id) == [None]
