"""Hypothesis strategies driven by the spec's JSON Schemas, biased towards real identifiers and hostile edges.

``for_schema`` follows a schema (types, properties and ``required``, ``enum``/``const``, ``oneOf``/``anyOf``/
``allOf``, array ``items``, integer bounds, the Matrix ``format``s) and, at every level, sometimes produces
a hostile value instead: a wrong type, an integer outside the canonical range, a deep nest, a long string,
control characters. Strings whose format or name says they are an identifier are drawn mostly from the
``World``: the ids of the real room, users, events, devices and servers of the running fuzz session, so that
room-scoped paths reach real rooms.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

Json = Any

# Values that have broken JSON parsers, canonical-JSON checks, SQL integer columns and pagination tokens.
EDGE_INTS = [0, -1, 1, 2**31, 2**53 - 1, 2**53, -(2**53), 2**63 - 1, 2**63, -(2**63) - 1, 10**30]
EDGE_STRINGS = [
    "",
    " ",
    "\u0000",
    "..",
    "../../etc/passwd",
    "%00",
    "%",
    "/",
    "?",
    "#",
    "@",
    ":",
    "!:",
    "$",
    "@a:",
    "@:example.org",
    "!x:example.org",
    "#a:example.org",
    "@fuzz:example.org",
    "$abc:example.org",
    "s9999999999999999999",
    "t-1_-1",
    "9" * 40,
    "null",
    "true",
    "{}",
    "[]",
    "é" * 30,
    "\ud7ff\ue000",
    "x" * 3000,
    "m.room.create",
    "m.room.power_levels",
    "m.room.member",
]


@dataclass
class World:
    """Real identifiers of the fuzz session, filled in by the harness as it sets up (and as rooms change)."""

    room_ids: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)
    device_ids: list[str] = field(default_factory=list)
    server_names: list[str] = field(default_factory=list)
    filter_ids: list[str] = field(default_factory=list)
    event_types: list[str] = field(
        default_factory=lambda: [
            "m.room.message",
            "m.room.name",
            "m.room.topic",
            "m.room.member",
            "m.room.power_levels",
            "m.room.join_rules",
            "m.room.history_visibility",
            "m.room.server_acl",
            "m.room.redaction",
            "m.room.create",
            "m.reaction",
            "m.fuzz.custom",
        ]
    )
    # Any "type" field: login and identifier types as well as event types.
    other_types: list[str] = field(
        default_factory=lambda: ["m.login.password", "m.login.token", "m.login.dummy", "m.id.user"]
    )
    tokens: list[str] = field(default_factory=list)  # pagination tokens seen in answers
    passwords: list[str] = field(default_factory=list)  # the fuzz user's, so that some logins succeed

    def pool(self, name: str) -> list[str]:
        if name == "types":
            return [*self.other_types, *self.event_types]
        return list(getattr(self, name))


FIRST_FAVOURED = frozenset({"room_ids", "user_ids", "aliases", "device_ids", "filter_ids", "passwords"})


def from_pool(world: World, name: str) -> st.SearchStrategy[str]:
    """One of the world's ``name`` values, read when drawn (the pools grow while the fuzzer runs)."""

    def pick(i: int) -> str:
        # The first room, user, alias or device is the one that matters most (the room the user is in,
        # the user itself): it is drawn about seven times in ten. Other pools are drawn from evenly.
        pool = world.pool(name)
        if not pool:
            return ""
        return pool[0] if i < 70 and name in FIRST_FAVOURED else pool[i % len(pool)]

    return st.integers(min_value=0, max_value=99).map(pick)


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], odd_in: int) -> st.SearchStrategy[Any]:
    """``odd`` about once in ``odd_in`` draws, ``usual`` otherwise."""
    return st.integers(min_value=0, max_value=odd_in - 1).flatmap(lambda i: odd if i == 0 else usual)


def text(max_size: int = 30) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(string.ascii_letters + string.digits + "._-=", max_size=max_size),
        st.text(max_size=max_size),
        st.sampled_from(EDGE_STRINGS),
    )


def any_json(max_leaves: int = 12) -> st.SearchStrategy[Json]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from(EDGE_INTS),
        st.floats(allow_nan=False, allow_infinity=False),
        text(),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(text(12), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def deep_nest(depth: int, leaf: Json = 1) -> Json:
    value: Json = leaf
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


def deep_nest_text(depth: int) -> str:
    """JSON text nested ``depth`` deep (built as text: deeper than Python's json module can encode)."""
    opening = "".join('{"a":' if i % 2 else "[" for i in range(depth))
    closing = "".join("}" if i % 2 else "]" for i in reversed(range(depth)))
    return opening + "1" + closing


def hostile() -> st.SearchStrategy[Json]:
    """A value of any shape, for a place that expects one particular shape."""
    return st.one_of(
        any_json(),
        st.sampled_from(EDGE_INTS),
        st.sampled_from(EDGE_STRINGS),
        st.integers(min_value=10, max_value=200).map(deep_nest),
        st.just([]),
        st.just({}),
    )


# Identifier-like string formats and parameter names, and the world pool each draws from.
FORMAT_POOLS = {
    "mx-room-id": "room_ids",
    "mx-user-id": "user_ids",
    "mx-event-id": "event_ids",
    "mx-room-alias": "aliases",
    "mx-server-name": "server_names",
}
NAME_POOLS = {
    "roomid": "room_ids",
    "room_id": "room_ids",
    "roomidoralias": "room_ids",
    "roomalias": "aliases",
    "room_alias": "aliases",
    "alias": "aliases",
    "userid": "user_ids",
    "user_id": "user_ids",
    "sender": "user_ids",
    "eventid": "event_ids",
    "event_id": "event_ids",
    "redacts": "event_ids",
    "v": "event_ids",
    "servername": "server_names",
    "server_name": "server_names",
    "server": "server_names",
    "via": "server_names",
    "origin": "server_names",
    "destination": "server_names",
    "user": "user_ids",
    "password": "passwords",
    "deviceid": "device_ids",
    "device_id": "device_ids",
    "filterid": "filter_ids",
    "eventtype": "event_types",
    "type": "types",
    "from": "tokens",
    "to": "tokens",
    "since": "tokens",
    "next_batch": "tokens",
}


def identifier(world: World, pool: str) -> st.SearchStrategy[str]:
    """Mostly a real id, sometimes a malformed or foreign one."""
    return mostly(from_pool(world, pool), text(), 8)


@dataclass
class SchemaStrategies:
    world: World
    hostile_rate: int = 20  # one value in about this many is replaced by a hostile one

    def for_schema(self, schema: Json, name: str = "", depth: int = 0) -> st.SearchStrategy[Json]:
        follow = self._follow(schema if isinstance(schema, dict) else {}, name, depth)
        if depth > 6:
            return follow
        return mostly(follow, hostile(), self.hostile_rate)

    def _follow(self, schema: dict[str, Any], name: str, depth: int) -> st.SearchStrategy[Json]:
        if "const" in schema:
            return st.just(schema["const"])
        if schema.get("enum"):
            return st.sampled_from(list(schema["enum"]))
        if schema.get("allOf"):
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                if isinstance(part, dict):
                    props = {**merged.get("properties", {}), **part.get("properties", {})}
                    required = [*merged.get("required", []), *part.get("required", [])]
                    merged = {**merged, **part, "properties": props, "required": required}
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self._follow({**merged, **rest}, name, depth)
        for key in ("oneOf", "anyOf"):
            if schema.get(key):
                rest = {k: v for k, v in schema.items() if k != key}
                return st.one_of([self.for_schema({**rest, **opt}, name, depth + 1) for opt in schema[key]])
        kind = schema.get("type")
        if isinstance(kind, list):
            return st.one_of([self._follow({**schema, "type": k}, name, depth) for k in kind])
        if kind is None:
            kind = "object" if "properties" in schema else None
        builder: Callable[[dict[str, Any], str, int], st.SearchStrategy[Json]] | None = {
            "object": self._object,
            "array": self._array,
            "string": self._string,
            "integer": self._integer,
            "number": self._number,
            "boolean": lambda *_: st.booleans(),
            "null": lambda *_: st.none(),
        }.get(kind or "")
        if builder is None:
            return any_json(6)
        return builder(schema, name, depth)

    def _object(self, schema: dict[str, Any], name: str, depth: int) -> st.SearchStrategy[Json]:
        props: dict[str, Any] = schema.get("properties") or {}
        required = [r for r in schema.get("required", []) if r in props or not props]
        fixed = {k: self.for_schema(v, k, depth + 1) for k, v in props.items() if k in required}
        optional = {k: self.for_schema(v, k, depth + 1) for k, v in props.items() if k not in required}
        extra = schema.get("additionalProperties")
        extra_values = (
            self.for_schema(extra, "", depth + 1) if isinstance(extra, dict) and extra else any_json(4)
        )
        extras = st.dictionaries(text(16), extra_values, max_size=3 if extra or not props else 1)
        base = st.fixed_dictionaries(fixed, optional=optional)
        # Sometimes a required property is missing.
        drop = mostly(st.just(None), st.sampled_from(required), 10) if required else st.just(None)
        return st.tuples(base, extras, drop).map(
            lambda t: {**t[1], **{k: v for k, v in t[0].items() if k != t[2]}}
        )

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> st.SearchStrategy[Json]:
        items = schema.get("items") or {}
        max_size = min(int(schema.get("maxItems", 4)), 4)
        return st.lists(self.for_schema(items, name, depth + 1), max_size=max_size)

    def _string(self, schema: dict[str, Any], name: str, depth: int) -> st.SearchStrategy[Json]:
        pool = FORMAT_POOLS.get(schema.get("format", "")) or NAME_POOLS.get(name.lower())
        if pool is not None:
            return identifier(self.world, pool)
        if schema.get("format") == "mx-mxc-uri":
            return st.one_of(st.just("mxc://127.0.0.1/abc"), text())
        return text()

    def _integer(self, schema: dict[str, Any], name: str, depth: int) -> st.SearchStrategy[Json]:
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.one_of(
            st.integers(
                min_value=int(low) if low is not None else -1000,
                max_value=int(high) if high is not None else 100_000,
            ),
            st.sampled_from(EDGE_INTS),
        )

    def _number(self, schema: dict[str, Any], name: str, depth: int) -> st.SearchStrategy[Json]:
        return st.one_of(self._integer(schema, name, depth), st.floats(allow_nan=False, allow_infinity=False))
