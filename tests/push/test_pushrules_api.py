"""``/pushrules/`` per-rule operations over HTTP (CS "Push Rules: API"), with the spec's errors."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, start_server

BASE = "/pushrules/global"


async def test_per_rule_crud_ordering_and_errors(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    hs = await start_server(tmp_path / "a")
    servers.append(hs)
    me = await Client.register(session, hs, "me")

    # The defaults, with the user's id filled in.
    rules = await me.ok("GET", "/pushrules/")
    mention = next(r for r in rules["global"]["override"] if r["rule_id"] == ".m.rule.is_user_mention")
    assert mention["conditions"][0]["value"] == me.user_id
    assert (await me.ok("GET", f"{BASE}/override/.m.rule.master"))["enabled"] is False

    # Add three content rules; the newest goes first, before/after place the others.
    await me.ok("PUT", f"{BASE}/content/a", {"pattern": "apple", "actions": ["notify"]})
    await me.ok("PUT", f"{BASE}/content/b", {"pattern": "banana", "actions": ["notify"]})
    await me.ok("PUT", f"{BASE}/content/c", {"pattern": "cherry", "actions": []}, after="a")
    content = (await me.ok("GET", f"{BASE}/content/"))["content"]
    assert [r["rule_id"] for r in content] == ["b", "a", "c"]
    await me.ok("PUT", f"{BASE}/content/c", {"pattern": "cherry", "actions": []}, before="b")
    got = await me.ok("GET", f"{BASE}/content/c")
    assert got == {"rule_id": "c", "default": False, "enabled": True, "pattern": "cherry", "actions": []}
    order = [r["rule_id"] for r in (await me.ok("GET", f"{BASE}/"))["content"]]
    assert order == ["c", "b", "a"]

    # enabled and actions, on a user rule and on a default rule.
    await me.ok("PUT", f"{BASE}/content/a/enabled", {"enabled": False})
    assert await me.ok("GET", f"{BASE}/content/a/enabled") == {"enabled": False}
    await me.ok("PUT", f"{BASE}/underride/.m.rule.message/actions", {"actions": []})
    assert await me.ok("GET", f"{BASE}/underride/.m.rule.message/actions") == {"actions": []}
    await me.ok("PUT", f"{BASE}/override/.m.rule.master/enabled", {"enabled": True})
    assert (await me.ok("GET", f"{BASE}/override/.m.rule.master"))["enabled"] is True
    # The whole set is also the m.push_rules account data clients read in /sync.
    sync = await me.ok("GET", "/sync", timeout="0")
    stored = next(e for e in sync["account_data"]["events"] if e["type"] == "m.push_rules")
    assert [r["rule_id"] for r in stored["content"]["global"]["content"]] == ["c", "b", "a"]

    # Override rules with conditions sit after the server-default override rules.
    cond = [{"kind": "event_match", "key": "type", "pattern": "m.room.topic"}]
    await me.ok("PUT", f"{BASE}/override/topic", {"conditions": cond, "actions": ["notify"]})
    override = [r["rule_id"] for r in (await me.ok("GET", f"{BASE}/override"))["override"]]
    assert override[0] == ".m.rule.master" and override[-1] == "topic"

    # Deleting.
    await me.ok("DELETE", f"{BASE}/content/b")
    assert (await me.call("GET", f"{BASE}/content/b"))[0] == 404

    # The errors.
    status, err = await me.call("GET", f"{BASE}/content/nope")
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    status, err = await me.call("DELETE", f"{BASE}/override/.m.rule.master")
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")
    status, err = await me.call(
        "PUT", f"{BASE}/content/x", {"pattern": "x", "actions": ["notify"]}, before="nope"
    )
    assert status == 400 and err["errcode"] == "M_UNKNOWN"
    status, err = await me.call("PUT", f"{BASE}/content/x", {"actions": ["notify"]})
    assert status == 400 and err["errcode"] == "M_MISSING_PARAM"
    status, err = await me.call("PUT", f"{BASE}/content/x", {"pattern": "x", "actions": ["explode"]})
    assert status == 400
    status, err = await me.call("PUT", f"{BASE}/nosuchkind/x", {"actions": []})
    assert status == 400 and err["errcode"] == "M_INVALID_PARAM"
    status, err = await me.call("PUT", f"{BASE}/content/a/enabled", {"enabled": "yes"})
    assert status == 400
    status, err = await me.call("GET", "/pushrules/device/")
    assert status == 400
    # Nothing of the failed edits was stored.
    assert [r["rule_id"] for r in (await me.ok("GET", f"{BASE}/content"))["content"]] == ["c", "a"]


async def test_push_rules_account_data_is_managed_by_the_server(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    hs = await start_server(tmp_path / "a")
    servers.append(hs)
    me = await Client.register(session, hs, "me")
    path = f"/user/{me.user_id}/account_data/m.push_rules"
    status, err = await me.call("PUT", path, {"global": {}})
    assert (status, err["errcode"]) == (405, "M_BAD_JSON")
    rules = await me.ok("GET", path)
    assert any(r["rule_id"] == ".m.rule.master" for r in rules["global"]["override"])
    # The initial sync carries the rules too, before any edit.
    sync = await me.ok("GET", "/sync", timeout="0")
    in_sync = next(e["content"] for e in sync["account_data"]["events"] if e["type"] == "m.push_rules")
    assert in_sync == rules
