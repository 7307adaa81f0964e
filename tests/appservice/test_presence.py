"""Presence for an appservice with ``receive_ephemeral`` (AS "Pushing ephemeral data", MSC2409), through
mautrix's appservice module: ``m.presence`` of users sharing a room with a user of its namespaces, and of
its own users, pushed with the transactions; presence of users it has nothing to do with is not."""

from __future__ import annotations

from typing import Any

from mautrix.types import PresenceState, UserID

from tests.appservice.conftest import Env
from tests.appservice.harness import wait_until


async def test_presence_is_pushed_to_interested_appservices(env: Env) -> None:
    puppet = env.bridge.appservice.intent.user(UserID(f"@bridge_pres:{env.server_name}"))
    await puppet.ensure_registered()
    carol = await env.anon.register("carol")
    dave = await env.anon.register("dave")  # shares no room with any bridge user
    status, body = await carol.call("POST", "/_matrix/client/v3/createRoom", {"invite": [puppet.mxid]})
    assert status == 200
    await puppet.join_room(body["room_id"])

    def presence() -> list[tuple[str, str, Any]]:
        return [
            (str(e.sender), str(e.content.presence), getattr(e.content, "status_msg", None))
            for e in env.bridge.received
            if str(e.type) == "m.presence"
        ]

    async def put(client: Any, state: str, status_msg: str | None = None) -> None:
        body: dict[str, Any] = {"presence": state}
        if status_msg is not None:
            body["status_msg"] = status_msg
        code, _ = await client.call("PUT", f"/_matrix/client/v3/presence/{client.user_id}/status", body)
        assert code == 200

    await put(dave, "online", "not for the bridge")
    await put(carol, "online", "hello bridge")
    await wait_until(lambda: (carol.user_id, "online", "hello bridge") in presence(), "carol's presence")
    # The bridge's own user (the appservice acting as it).
    await puppet.set_presence(PresenceState.UNAVAILABLE)
    await wait_until(lambda: (puppet.mxid, "unavailable", None) in presence(), "the puppet's presence")
    await put(carol, "offline")
    await wait_until(lambda: (carol.user_id, "offline", None) in presence(), "carol offline")
    assert dave.user_id not in {sender for sender, _, _ in presence()}
