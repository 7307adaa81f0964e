"""Push rule sets: the spec's server-default rules (CS "Push Notifications" > "Predefined Rules", as of
v1.17: the legacy rules that looked for mentions in ``content.body``, ``.m.rule.contains_display_name``,
``.m.rule.contains_user_name`` and ``.m.rule.roomnotif``, were removed then), the user's own rules merged
with them, and the pure edits of ``/pushrules/`` (add with ``before``/``after``, delete, ``enabled``,
``actions``).

A user's rules are kept in global account data ``m.push_rules`` as the whole ``{"global": ruleset}`` that
clients read in /sync; on every read it is merged with the current defaults, so a server-default rule the
user never touched follows the server's version and a stored copy never goes stale: only the user's own
rules and the ``enabled``/``actions`` they set on a default rule are taken from it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

Ruleset = Mapping[str, list[dict[str, Any]]]
KINDS = ("override", "content", "room", "sender", "underride")
ACCOUNT_DATA_TYPE = "m.push_rules"
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


def default_ruleset(user_id: str) -> dict[str, list[dict[str, Any]]]:
    text = json.dumps(DEFAULT_RULES).replace(json.dumps(USER_PLACEHOLDER)[1:-1], json.dumps(user_id)[1:-1])
    rules = json.loads(text)
    return {kind: rules.get(kind, []) for kind in KINDS}


class PushRuleError(Exception):
    """An edit the spec refuses; ``errcode`` and ``status`` are for the HTTP edge."""

    def __init__(self, status: int, errcode: str, message: str) -> None:
        super().__init__(message)
        self.status, self.errcode, self.message = status, errcode, message


def merged_ruleset(user_id: str, stored: Mapping[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """The user's effective rules: per kind, the server-default override rules, then the user's own, in
    the order of the stored set, with the defaults' ``enabled``/``actions`` as the user set them; the
    default underride rules come after the user's underride rules (CS "Predefined Rules": "server-default
    rules ... have lower priority than rules of the same kind set by the user", except override defaults
    like ``.m.rule.master``, which come first)."""
    defaults = default_ruleset(user_id)
    glob = stored.get("global") if isinstance(stored, Mapping) else None
    user: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    tweaks: dict[str, dict[str, Any]] = {}
    if isinstance(glob, Mapping):
        for kind in KINDS:
            rules = glob.get(kind)
            if not isinstance(rules, list):
                continue
            for rule in rules:
                if not isinstance(rule, dict) or not isinstance(rule.get("rule_id"), str):
                    continue
                if rule["rule_id"].startswith("."):
                    tweaks[f"{kind}/{rule['rule_id']}"] = rule
                else:
                    user[kind].append({**rule, "default": False})
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        merged_defaults = []
        for rule in defaults[kind]:
            rule = copy.deepcopy(rule)
            tweak = tweaks.get(f"{kind}/{rule['rule_id']}")
            if tweak is not None:
                if isinstance(tweak.get("enabled"), bool):
                    rule["enabled"] = tweak["enabled"]
                if isinstance(tweak.get("actions"), list):
                    rule["actions"] = tweak["actions"]
            merged_defaults.append(rule)
        if kind == "override":
            out[kind] = merged_defaults + user[kind]
        else:
            out[kind] = user[kind] + merged_defaults
    return out


def find_rule(ruleset: Ruleset, kind: str, rule_id: str) -> dict[str, Any]:
    if kind not in KINDS:
        raise PushRuleError(400, "M_INVALID_PARAM", f"Unknown push rule kind {kind!r}")
    for rule in ruleset.get(kind, []):
        if rule.get("rule_id") == rule_id:
            return rule
    raise PushRuleError(404, "M_NOT_FOUND", "Unknown push rule")


def valid_actions(actions: Any) -> list[Any]:
    if not isinstance(actions, list):
        raise PushRuleError(400, "M_BAD_JSON", "actions must be a list")
    for action in actions:
        if isinstance(action, str):
            if action not in ("notify", "dont_notify", "coalesce"):
                raise PushRuleError(400, "M_UNKNOWN", f"Unrecognised action {action!r}")
        elif not (isinstance(action, dict) and isinstance(action.get("set_tweak"), str)):
            raise PushRuleError(400, "M_UNKNOWN", "Unrecognised action")
    # "dont_notify" and "coalesce" are no-ops (v1.7): kept as given, treated as no action.
    return actions


def put_rule(
    ruleset: Ruleset,
    kind: str,
    rule_id: str,
    body: Mapping[str, Any],
    before: str | None = None,
    after: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """``PUT /pushrules/global/{kind}/{ruleId}``: add or replace a user rule (``before``/``after`` place
    it relative to another user rule of the kind)."""
    if kind not in KINDS:
        raise PushRuleError(400, "M_INVALID_PARAM", f"Unknown push rule kind {kind!r}")
    if not rule_id or "/" in rule_id or "\\" in rule_id:
        raise PushRuleError(400, "M_INVALID_PARAM", "Invalid rule id")
    if rule_id.startswith("."):
        raise PushRuleError(400, "M_INVALID_PARAM", "Cannot add or change a server-default rule")
    rule: dict[str, Any] = {"rule_id": rule_id, "default": False, "enabled": True}
    rule["actions"] = valid_actions(body.get("actions"))
    if kind == "content":
        if not isinstance(body.get("pattern"), str):
            raise PushRuleError(400, "M_MISSING_PARAM", "content rules need a pattern")
        rule["pattern"] = body["pattern"]
    elif kind in ("override", "underride"):
        conditions = body.get("conditions", [])
        if not isinstance(conditions, list) or not all(isinstance(c, dict) for c in conditions):
            raise PushRuleError(400, "M_BAD_JSON", "conditions must be a list of objects")
        rule["conditions"] = conditions
    out = {k: [dict(r) for r in ruleset.get(k, [])] for k in KINDS}
    rules = out[kind]
    existing = next((i for i, r in enumerate(rules) if r.get("rule_id") == rule_id), None)
    if existing is not None:
        rule["enabled"] = rules[existing].get("enabled", True)
    anchor = before if before is not None else after
    if anchor is not None:
        if anchor.startswith("."):
            raise PushRuleError(400, "M_INVALID_PARAM", "before/after cannot name a server-default rule")
        if existing is not None:
            del rules[existing]
        at = next((i for i, r in enumerate(rules) if r.get("rule_id") == anchor), None)
        if at is None:
            raise PushRuleError(400, "M_UNKNOWN", f"No rule {anchor!r} to place this rule next to")
        rules.insert(at if before is not None else at + 1, rule)
    elif existing is not None:
        rules[existing] = rule
    else:
        # A new user rule goes first among the user's rules of its kind (highest priority), after the
        # override defaults.
        first_user = next((i for i, r in enumerate(rules) if not r.get("default")), None)
        if first_user is None:
            first_user = len(rules) if kind == "override" else 0
        rules.insert(first_user, rule)
    return out


def delete_rule(ruleset: Ruleset, kind: str, rule_id: str) -> dict[str, list[dict[str, Any]]]:
    rule = find_rule(ruleset, kind, rule_id)
    if rule.get("default"):
        raise PushRuleError(400, "M_INVALID_PARAM", "Cannot delete a server-default rule")
    out = {k: [dict(r) for r in ruleset.get(k, [])] for k in KINDS}
    out[kind] = [r for r in out[kind] if r.get("rule_id") != rule_id]
    return out


def set_attribute(
    ruleset: Ruleset, kind: str, rule_id: str, attr: str, value: Any
) -> dict[str, list[dict[str, Any]]]:
    """``PUT .../{ruleId}/enabled`` or ``.../actions``."""
    find_rule(ruleset, kind, rule_id)
    if attr == "enabled":
        if not isinstance(value, bool):
            raise PushRuleError(400, "M_BAD_JSON", "enabled must be a boolean")
    elif attr == "actions":
        value = valid_actions(value)
    else:
        raise PushRuleError(400, "M_UNRECOGNIZED", f"Unknown attribute {attr!r}")
    out = {k: [dict(r) for r in ruleset.get(k, [])] for k in KINDS}
    for rule in out[kind]:
        if rule.get("rule_id") == rule_id:
            rule[attr] = value
    return out


def stored_form(ruleset: Ruleset) -> dict[str, Any]:
    """What is written to account data: the whole set, as clients expect ``m.push_rules`` in /sync."""
    return {"global": {k: list(ruleset.get(k, [])) for k in KINDS}}
