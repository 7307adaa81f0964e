"""Push rule evaluation (CS "Push Notifications" > "Push Rules"): pure, data in, actions out.

The caller gathers what the conditions look at (the event, the room's member count, the sender's power
level and the room's notification levels, the user's display name) and passes it in; nothing here does
I/O. ``EventFacts`` is built once per event and shared by every user the event is evaluated for, so the
per-user cost is walking that user's rules over precomputed flattened properties.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from .rules import KINDS, Ruleset

# CS "Push Rules": "A word boundary is ... any character not in [A-Z], [a-z], [0-9] or _".
_WORD = "A-Za-z0-9_"
_MAX_SAFE_INT = 2**53 - 1
_MEMBER_COUNT = re.compile(r"(==|<=|>=|<|>)?([0-9]+)")


@lru_cache(maxsize=1024)  # the same few keys of the same rules, for every event and every user
def split_path(key: str) -> tuple[str, ...]:
    """Appendix "Dot-separated property paths": ``.`` separates, ``\\.`` is a literal dot, ``\\\\`` a
    literal backslash (any other backslash stands for itself)."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            current.append(key[i + 1])
            i += 2
            continue
        if c == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return tuple(parts)


def _is_simple(value: Any) -> bool:
    """Non-compound canonical JSON values: strings, safe integers, booleans, null."""
    if value is None or isinstance(value, (str, bool)):
        return True
    return isinstance(value, int) and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT


def lookup(event: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    """(found, value) for a property path of the event."""
    value: Any = event
    for part in path:
        # Parsed JSON is made of dicts: their exact type is a cheaper test than the Mapping ABC's.
        if type(value) is not dict and not isinstance(value, Mapping):
            return False, None
        if part not in value:
            return False, None
        value = value[part]
    return True, value


@lru_cache(maxsize=4096)
def _glob(pattern: str, word_boundary: bool) -> re.Pattern[str]:
    """Appendix "Glob-style matching": ``*`` any run of characters, ``?`` exactly one; case-insensitive."""
    body = "".join(".*?" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    if word_boundary:
        # A substring that starts and ends at a word boundary (the value's ends or a non-word character).
        return re.compile(rf"(?:^|(?<=[^{_WORD}])){body}(?:$|(?=[^{_WORD}]))", re.IGNORECASE | re.DOTALL)
    return re.compile(rf"\A{body}\Z", re.IGNORECASE | re.DOTALL)


def glob_matches(pattern: str, value: str, word_boundary: bool = False) -> bool:
    return _glob(pattern, word_boundary).search(value) is not None


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What the conditions of every user's rules may look at for one event."""

    event: Mapping[str, Any]  # the event as a client sees it (type, sender, state_key, content, room_id)
    member_count: int  # joined members of the room, the event included if it is a join
    sender_power_level: float  # since v12 a creator's level is infinite
    notification_levels: Mapping[str, int] = field(default_factory=dict)  # key -> level (default 50)
    _paths: dict[str, tuple[bool, Any]] = field(default_factory=dict, compare=False, repr=False)
    # interned condition (hashed by identity, kept alive by this dict) -> whether it holds for the event
    _memo: dict[Condition, bool] = field(default_factory=dict, compare=False, repr=False)

    def get(self, key: str) -> tuple[bool, Any]:
        hit = self._paths.get(key)
        if hit is None:
            hit = lookup(self.event, split_path(key))
            self._paths[key] = hit
        return hit

    @property
    def body(self) -> str | None:
        found, value = self.get("content.body")
        return value if found and isinstance(value, str) else None


def _member_count_matches(spec: Any, count: int) -> bool:
    if not isinstance(spec, str):
        return False
    m = _MEMBER_COUNT.fullmatch(spec)
    if m is None:
        return False
    op, n = m.group(1) or "==", int(m.group(2))
    return {
        "==": count == n,
        "<": count < n,
        ">": count > n,
        "<=": count <= n,
        ">=": count >= n,
    }[op]


def condition_matches(
    cond: Mapping[str, Any], facts: EventFacts, user_id: str, display_name: str | None
) -> bool:
    """One condition of an override or underride rule. Unknown kinds never match (the spec: "effectively
    making the push rule disabled")."""
    kind = cond.get("kind")
    if kind == "event_match":
        key, pattern = cond.get("key"), cond.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return False
        found, value = facts.get(key)
        if not found or not isinstance(value, str):
            return False
        return glob_matches(pattern, value, word_boundary=key == "content.body")
    if kind == "event_property_is":
        key, expected = cond.get("key"), cond.get("value")
        if not isinstance(key, str) or "value" not in cond or not _is_simple(expected):
            return False
        found, value = facts.get(key)
        return found and _is_simple(value) and _same(value, expected)
    if kind == "event_property_contains":
        key, expected = cond.get("key"), cond.get("value")
        if not isinstance(key, str) or "value" not in cond or not _is_simple(expected):
            return False
        found, value = facts.get(key)
        if not found or not isinstance(value, list):
            return False
        return any(_is_simple(v) and _same(v, expected) for v in value)
    if kind == "contains_display_name":
        body = facts.body
        if not display_name or body is None:
            return False
        return (
            re.search(
                rf"(?:^|(?<=[^{_WORD}])){re.escape(display_name)}(?:$|(?=[^{_WORD}]))", body, re.IGNORECASE
            )
            is not None
        )
    if kind == "room_member_count":
        return _member_count_matches(cond.get("is"), facts.member_count)
    if kind == "sender_notification_permission":
        key = cond.get("key")
        if not isinstance(key, str):
            return False
        return facts.sender_power_level >= facts.notification_levels.get(key, 50)
    return False


def _same(a: Any, b: Any) -> bool:
    # "do not cast types": True is not 1 and 1 is not True (Python would say they are equal).
    return type(a) is type(b) and bool(a == b)


@dataclass(frozen=True, eq=False, slots=True)
class Condition:
    """One condition, interned: every user's copy of a default rule shares the same objects, so an event
    evaluates each distinct condition once (``EventFacts`` memoises by identity)."""

    spec: Mapping[str, Any]
    per_user: bool  # contains_display_name depends on the user's display name: never memoised
    # What ``condition_matches`` answers for a condition that does not depend on the user, made once when
    # the condition is made (None for per-user ones). Every remote event is evaluated against the rules of
    # the room's local members; the default rules are a dozen conditions, most of them an event_match of
    # ``type`` against a literal, which the general path answered by dispatching on the spec's kind and
    # running a case-insensitive regex search.
    test: Callable[[EventFacts], bool] | None = None


def make_condition(spec: Mapping[str, Any]) -> Condition:
    per_user = spec.get("kind") == "contains_display_name"
    return Condition(spec, per_user, None if per_user else _compiled(spec))


def _compiled(spec: Mapping[str, Any]) -> Callable[[EventFacts], bool]:
    """``condition_matches(spec, facts, ...)`` for a condition that does not look at the user: the spec's
    kind, key and pattern are looked at once here instead of for every event."""
    kind, key = spec.get("kind"), spec.get("key")
    if kind == "event_match":
        pattern = spec.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return _never
        if key != "content.body" and pattern.isascii() and "*" not in pattern and "?" not in pattern:
            # A glob without wildcards matches the whole value, ignoring case. For an ASCII value that is
            # ASCII case folding (a case-insensitive regex matches nothing else against ASCII text); any
            # other value is left to the regex, which also folds e.g. U+212A KELVIN SIGN to "k".
            folded = pattern.lower()

            def literal(facts: EventFacts) -> bool:
                found, value = facts.get(key)
                if not found or not isinstance(value, str):
                    return False
                if value.isascii():
                    return value.lower() == folded
                return glob_matches(pattern, value)

            return literal
        regex = _glob(pattern, key == "content.body")

        def glob(facts: EventFacts) -> bool:
            found, value = facts.get(key)
            return found and isinstance(value, str) and regex.search(value) is not None

        return glob
    if kind in ("event_property_is", "event_property_contains"):
        expected = spec.get("value")
        if not isinstance(key, str) or "value" not in spec or not _is_simple(expected):
            return _never
        if kind == "event_property_is":

            def property_is(facts: EventFacts) -> bool:
                found, value = facts.get(key)
                return found and _is_simple(value) and _same(value, expected)

            return property_is

        def property_contains(facts: EventFacts) -> bool:
            found, value = facts.get(key)
            if not found or not isinstance(value, list):
                return False
            return any(_is_simple(v) and _same(v, expected) for v in value)

        return property_contains
    if kind == "room_member_count":
        member_count = spec.get("is")
        return lambda facts: _member_count_matches(member_count, facts.member_count)
    if kind == "sender_notification_permission":
        if not isinstance(key, str):
            return _never
        return lambda facts: facts.sender_power_level >= facts.notification_levels.get(key, 50)
    return _never  # an unknown kind never matches (and contains_display_name is per user)


def _never(facts: EventFacts) -> bool:
    return False


_NEVER = make_condition({"kind": None})  # an unknown kind: never matches


@lru_cache(maxsize=65536)
def _interned(text: str) -> Condition:
    return make_condition(json.loads(text))


def intern_condition(spec: Any) -> Condition:
    if not isinstance(spec, Mapping):
        return _NEVER
    try:
        return _interned(json.dumps(spec, sort_keys=True))
    except (TypeError, ValueError):
        return _NEVER


@lru_cache(maxsize=4096)
def _interned_actions(text: str) -> tuple[Any, ...]:
    return tuple(json.loads(text))


def intern_actions(actions: Any) -> tuple[Any, ...]:
    """A rule's actions as one shared tuple per distinct list (every user's default rules share them)."""
    if not isinstance(actions, list):
        return ()
    try:
        return _interned_actions(json.dumps(actions, sort_keys=True))
    except (TypeError, ValueError):
        return ()


@dataclass(frozen=True, slots=True)
class Outcome:
    rule_id: str
    actions: Sequence[Any]

    @property
    def notify(self) -> bool:
        return "notify" in self.actions

    @property
    def highlight(self) -> bool:
        for action in self.actions:
            if isinstance(action, Mapping) and action.get("set_tweak") == "highlight":
                return action.get("value", True) is True
        return False


@dataclass(frozen=True, slots=True)
class CompiledRule:
    outcome: Outcome
    conditions: tuple[Condition, ...] = ()
    room_id: str | None = None  # a room rule
    sender: str | None = None  # a sender rule


@dataclass(frozen=True, slots=True)
class CompiledRuleset:
    """A user's enabled rules in evaluation order (override, content, room, sender, underride)."""

    rules: tuple[CompiledRule, ...]
    uses_display_name: bool


def compile_ruleset(ruleset: Ruleset) -> CompiledRuleset:
    compiled: list[CompiledRule] = []
    for kind in KINDS:
        for rule in ruleset.get(kind, ()):
            if not rule.get("enabled", True):
                continue
            outcome = Outcome(str(rule.get("rule_id")), intern_actions(rule.get("actions", [])))
            if kind == "content":
                # A content rule is an event_match on content.body (word-boundary matching).
                cond = {"kind": "event_match", "key": "content.body", "pattern": rule.get("pattern")}
                compiled.append(CompiledRule(outcome, (intern_condition(cond),)))
            elif kind == "room":
                compiled.append(CompiledRule(outcome, room_id=outcome.rule_id))
            elif kind == "sender":
                compiled.append(CompiledRule(outcome, sender=outcome.rule_id))
            else:
                conditions = rule.get("conditions", [])
                if not isinstance(conditions, list):
                    compiled.append(CompiledRule(outcome, (_NEVER,)))
                else:
                    compiled.append(CompiledRule(outcome, tuple(intern_condition(c) for c in conditions)))
    uses_name = any(c.per_user for r in compiled for c in r.conditions)
    return CompiledRuleset(tuple(compiled), uses_name)


def _substituted(value: Any, placeholder: str, user_id: str) -> Any:
    if isinstance(value, str):
        return value.replace(placeholder, user_id)
    if isinstance(value, Mapping):
        return {k: _substituted(v, placeholder, user_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_substituted(v, placeholder, user_id) for v in value]
    return value


class DefaultRulesCompiler:
    """The compiled server-default rules of users who stored no rules of their own, the common case.

    ``compile_ruleset(merged_ruleset(user, None))`` copies and compiles every default rule, about a
    millisecond a user: the first event persisted into a room of 50,000 local members after a start spent
    tens of seconds on it. The defaults differ between users only in the conditions that name the user
    (``.m.rule.is_user_mention``, ``.m.rule.invite_for_me``): they are compiled once for a placeholder
    user, and only those conditions are made again per user (not interned: no two users share them)."""

    def __init__(self, placeholder: str, defaults: Ruleset) -> None:
        self._placeholder = placeholder
        self._template = compile_ruleset(defaults)
        # (rule index, condition index) of the conditions that name the user
        self._personal = [
            (i, j)
            for i, rule in enumerate(self._template.rules)
            for j, cond in enumerate(rule.conditions)
            if placeholder in json.dumps(cond.spec)
        ]

    def for_user(self, user_id: str) -> CompiledRuleset:
        rules = list(self._template.rules)
        by_rule: dict[int, list[Condition]] = {}
        for i, j in self._personal:
            conditions = by_rule.setdefault(i, list(rules[i].conditions))
            spec = _substituted(conditions[j].spec, self._placeholder, user_id)
            conditions[j] = make_condition(spec)
        for i, conditions in by_rule.items():
            rules[i] = replace(rules[i], conditions=tuple(conditions))
        return CompiledRuleset(tuple(rules), self._template.uses_display_name)


def evaluate(
    ruleset: CompiledRuleset | Ruleset, facts: EventFacts, user_id: str, display_name: str | None
) -> Outcome | None:
    """The first enabled rule that matches, in the spec's order of kinds (override, content, room,
    sender, underride) and each kind's own order; None when no rule matches."""
    if not isinstance(ruleset, CompiledRuleset):
        ruleset = compile_ruleset(ruleset)
    memo = facts._memo
    room_id, sender = facts.event.get("room_id"), facts.event.get("sender")
    for rule in ruleset.rules:
        if rule.room_id is not None:
            if rule.room_id == room_id:
                return rule.outcome
            continue
        if rule.sender is not None:
            if rule.sender == sender:
                return rule.outcome
            continue
        for cond in rule.conditions:
            test = cond.test
            if test is None:
                hit = condition_matches(cond.spec, facts, user_id, display_name)
            else:
                known = memo.get(cond)
                if known is None:
                    known = memo[cond] = test(facts)
                hit = known
            if not hit:
                break
        else:
            return rule.outcome
    return None
