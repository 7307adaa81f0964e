"""Push rules, read only: ``GET /pushrules/`` and ``GET /pushrules/global/`` answer the server-default
rules of CS "Push Notifications" > "Predefined Rules" (as of v1.17, without the legacy body-matching content
rules), with the user's id filled in. Clients (matrix-js-sdk refuses to finish starting without them) get
a valid rule set; changing rules is not supported yet (those endpoints answer M_UNRECOGNIZED).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .auth import Authenticator

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
USER_PLACEHOLDER = "[the user's Matrix ID]"

# Copied from the spec's rule definitions (same order: it is the evaluation order within each kind).
DEFAULT_RULES: dict[str, list[dict[str, Any]]] = {
    "override": [
        {"rule_id": ".m.rule.master", "default": True, "enabled": False, "conditions": [], "actions": []},
        {
            "rule_id": ".m.rule.suppress_notices",
            "default": True,
            "enabled": True,
            "conditions": [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}],
            "actions": [],
        },
        {
            "rule_id": ".m.rule.invite_for_me",
            "default": True,
            "enabled": True,
            "conditions": [
                {"key": "type", "kind": "event_match", "pattern": "m.room.member"},
                {"key": "content.membership", "kind": "event_match", "pattern": "invite"},
                {"key": "state_key", "kind": "event_match", "pattern": "[the user's Matrix ID]"},
            ],
            "actions": ["notify", {"set_tweak": "sound", "value": "default"}],
        },
        {
            "rule_id": ".m.rule.member_event",
            "default": True,
            "enabled": True,
            "conditions": [{"key": "type", "kind": "event_match", "pattern": "m.room.member"}],
            "actions": [],
        },
        {
            "rule_id": ".m.rule.is_user_mention",
            "default": True,
            "enabled": True,
            "conditions": [
                {
                    "kind": "event_property_contains",
                    "key": "content.m\\.mentions.user_ids",
                    "value": "[the user's Matrix ID]",
                }
            ],
            "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}],
        },
        {
            "rule_id": ".m.rule.is_room_mention",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            "actions": ["notify", {"set_tweak": "highlight"}],
        },
        {
            "rule_id": ".m.rule.tombstone",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "event_match", "key": "type", "pattern": "m.room.tombstone"},
                {"kind": "event_match", "key": "state_key", "pattern": ""},
            ],
            "actions": ["notify", {"set_tweak": "highlight"}],
        },
        {
            "rule_id": ".m.rule.reaction",
            "default": True,
            "enabled": True,
            "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.reaction"}],
            "actions": [],
        },
        {
            "rule_id": ".m.rule.room.server_acl",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "event_match", "key": "type", "pattern": "m.room.server_acl"},
                {"kind": "event_match", "key": "state_key", "pattern": ""},
            ],
            "actions": [],
        },
        {
            "rule_id": ".m.rule.suppress_edits",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}
            ],
            "actions": [],
        },
    ],
    "underride": [
        {
            "rule_id": ".m.rule.call",
            "default": True,
            "enabled": True,
            "conditions": [{"key": "type", "kind": "event_match", "pattern": "m.call.invite"}],
            "actions": ["notify", {"set_tweak": "sound", "value": "ring"}],
        },
        {
            "rule_id": ".m.rule.encrypted_room_one_to_one",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "room_member_count", "is": "2"},
                {"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"},
            ],
            "actions": ["notify", {"set_tweak": "sound", "value": "default"}],
        },
        {
            "rule_id": ".m.rule.room_one_to_one",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "room_member_count", "is": "2"},
                {"kind": "event_match", "key": "type", "pattern": "m.room.message"},
            ],
            "actions": ["notify", {"set_tweak": "sound", "value": "default"}],
        },
        {
            "rule_id": ".m.rule.message",
            "default": True,
            "enabled": True,
            "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}],
            "actions": ["notify"],
        },
        {
            "rule_id": ".m.rule.encrypted",
            "default": True,
            "enabled": True,
            "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}],
            "actions": ["notify"],
        },
    ],
}


def default_ruleset(user_id: str) -> dict[str, Any]:
    text = json.dumps(DEFAULT_RULES).replace(json.dumps(USER_PLACEHOLDER)[1:-1], user_id)
    rules = json.loads(text)
    return {
        "override": rules["override"],
        "content": [],
        "room": [],
        "sender": [],
        "underride": rules["underride"],
    }


class PushRuleHandlers:
    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    def routes(self) -> list[web.RouteDef]:
        r: list[web.RouteDef] = []
        for p in PREFIXES:
            r += [
                web.get(p + "/pushrules/", self.all_rules),
                web.get(p + "/pushrules", self.all_rules),
                web.get(p + "/pushrules/global/", self.global_rules),
                web.get(p + "/pushrules/global", self.global_rules),
            ]
        return r

    async def all_rules(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        return web.json_response({"global": default_ruleset(requester.user_id)})

    async def global_rules(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        return web.json_response(default_ruleset(requester.user_id))
