"""One fuzz request per example: an operation's path, query and body drawn from its schemas.

The request is built as data (``FuzzRequest``) and authenticated by the harness when it is sent, since an
X-Matrix signature covers the exact URI and body.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from .spec import API_DIR, EventSchema, Operation, Param, load_event_schemas, path_param_names, resolve
from .values import EDGE_INTS, SchemaStrategies, World, any_json, deep_nest_text, from_pool, mostly, text

MAX_ENCODED = 1500  # per path segment or query value: keep request lines under aiohttp's 8190 limit
MAX_FILTER = 2500  # a filter given inline, before percent-encoding

# A filter given inline in a query (/sync, /messages, /context): a whole filter or a room event filter.
_DEFINITIONS = API_DIR / "client-server" / "definitions"
FILTER_SCHEMAS = [
    resolve({"$ref": name}, _DEFINITIONS / "x.yaml")
    for name in ("sync_filter.yaml", "room_event_filter.yaml")
]

# Operations that end sessions or accounts run as a throwaway user, so the fuzzer keeps its own token.
DESTRUCTIVE = (
    "/logout",
    "/account/deactivate",
    "/account/password",
    "/delete_devices",
    "/devices/{deviceId}",
)

CS_AUTH = ["user"] * 17 + ["none", "garbage"]
SS_AUTH = ["signed"] * 15 + ["none", "garbage", "wrong_key", "other_origin"]


# What may be done to a signed PDU after it was built (the harness builds it at send time, on the room's
# real forward extremities and auth events).
PDU_MUTATIONS = (
    "no_signatures",
    "bad_hash",
    "unknown_prev",
    "no_auth_events",
    "forged_local_sender",
    "foreign_sender",
    "room_not_joined",
    "drop_depth",
    "drop_hashes",
    "drop_type",
    "event_id_field",
)


# Federation membership endpoints the harness can drive with a real template (see FuzzHarness._flow).
MEMBERSHIP_FLOWS = ("send_join", "send_leave", "invite")


@dataclass(frozen=True)
class PduSpec:
    event_type: str
    state_key: str | None
    content: Any
    depth: int | None  # None: one more than the prev events
    mutation: str  # "none" or one of PDU_MUTATIONS


@dataclass(frozen=True)
class FuzzRequest:
    op: Operation
    path: str  # percent-encoded, without the query string
    query: tuple[tuple[str, str], ...]
    body: bytes | None
    content_type: str | None
    auth: str  # user/victim/none/garbage (CS); signed/none/garbage/wrong_key/other_origin (SS)
    pdus: tuple[PduSpec, ...] = ()  # for a federation /send: PDUs the harness builds and signs when sending

    @property
    def uri(self) -> str:
        if not self.query:
            return self.path
        return self.path + "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in self.query)

    def reproduction(self, limit: int = 2000) -> str:
        body = "" if self.body is None else self.body[:limit].decode("utf-8", "replace")
        more = "" if self.body is None or len(self.body) <= limit else f" ... ({len(self.body)} bytes)"
        ctype = f" [{self.content_type}]" if self.content_type else ""
        return f"{self.op.method} {self.uri} (auth={self.auth}){ctype}\n    body: {body}{more}"


def is_destructive(op: Operation) -> bool:
    return any(d in op.path for d in DESTRUCTIVE) or (
        op.method == "DELETE" and op.path.endswith("/devices/{deviceId}")
    )


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list) or value is None:
        return json.dumps(value)
    return str(value)


def _encoded(value: str) -> str:
    return quote(value, safe="")[:MAX_ENCODED]


class RequestStrategies:
    def __init__(self, world: World) -> None:
        self.world = world
        self.schemas = SchemaStrategies(world)
        # Path parameters are less often garbage: most examples should reach a real room, user or event.
        self.path_schemas = SchemaStrategies(world, hostile_rate=40)

    def path_value(self, param: Param | None, name: str) -> st.SearchStrategy[str]:
        lowered = name.lower()
        if lowered == "statekey":
            return mostly(st.one_of(st.just(""), from_pool(self.world, "user_ids")), text(), 6)
        if lowered == "txnid":
            return mostly(st.uuids().map(str), text(), 6)
        schema = param.schema if param is not None else {"type": "string"}
        return self.path_schemas.for_schema(schema, name).map(_scalar)

    def query_values(self, param: Param) -> st.SearchStrategy[list[str]]:
        if param.name == "filter":
            value = st.one_of(
                from_pool(self.world, "filter_ids"),
                self.schemas.for_schema(FILTER_SCHEMAS[0]).map(json.dumps),
                self.schemas.for_schema(FILTER_SCHEMAS[1]).map(json.dumps),
                any_json(8).map(json.dumps),
                st.integers(min_value=10, max_value=150).map(deep_nest_text),
                text(),
            )
            return value.map(lambda v: [v[:MAX_FILTER]])
        if param.name in ("timeout", "timeout_ms"):
            # Long polls: short waits or out-of-range values, never tens of seconds per example (an edge
            # value the servers accept, like 2**31, is a real wait of their maximum: a minute).
            short = st.integers(min_value=0, max_value=200).map(str)
            edges = [v for v in EDGE_INTS if v <= 200 or v > 2**31]
            return mostly(short, st.one_of(st.sampled_from(edges).map(str), text()), 4).map(lambda v: [v])
        strategy = self.schemas.for_schema(param.schema, param.name)
        return strategy.map(lambda v: [_scalar(x) for x in v] if isinstance(v, list) else [_scalar(v)])

    def body(self, op: Operation) -> st.SearchStrategy[tuple[bytes | None, str | None]]:
        if op.body_content_type is not None:
            return st.binary(max_size=2000).map(lambda b: (b, op.body_content_type))
        if op.body_schema is None:
            # Sometimes a body where none is expected.
            return st.one_of(
                st.just((None, None)), st.just((None, None)), st.just((b"{}", "application/json"))
            )
        json_body = self.schemas.for_schema(op.body_schema).map(
            lambda v: (json.dumps(v).encode(), "application/json")
        )
        garbage = st.one_of(
            st.binary(max_size=200),
            st.text(string.printable, max_size=200).map(str.encode),
            st.just(b""),
            st.just(b"[1, 2"),
            st.just(b'{"a": NaN}'),
            st.just(b'{"a": 1e400}'),
            st.just(b'{"a": 1, "a": 2}'),
            st.integers(min_value=100, max_value=5000).map(lambda d: deep_nest_text(d).encode()),
        ).map(lambda b: (b, "application/json"))
        return mostly(json_body, garbage, 10)

    def for_operation(self, op: Operation) -> st.SearchStrategy[FuzzRequest]:
        by_name = {p.name: p for p in op.params if p.location == "path"}
        names = path_param_names(op.path)
        path_values = st.tuples(*[self.path_value(by_name.get(n), n) for n in names])
        query_params = [p for p in op.params if p.location == "query"]
        query = st.tuples(
            *[st.tuples(st.just(p), self.query_values(p), st.integers(0, 9)) for p in query_params]
        )
        auth_modes = CS_AUTH if op.api == "cs" else SS_AUTH
        auth = st.just("victim") if is_destructive(op) and op.api == "cs" else st.sampled_from(auth_modes)
        path_and_body = st.tuples(path_values, self.body(op))
        if "{eventType}" in op.path and op.body_schema is not None:
            # Two times in three, an event of a type the spec defines, with content from its schema.
            path_and_body = mostly(self.typed_event(names, path_values), path_and_body, 3)
        request = st.builds(self._assemble, st.just(op), path_and_body, query, auth)
        if op.api == "ss" and op.path.endswith("/send/{txnId}"):
            # Half the transactions carry real signed PDUs of the room (some of them tampered with).
            signed = st.tuples(request, st.lists(self.pdu_spec(), min_size=1, max_size=3)).map(
                lambda t: replace(t[0], auth="signed", pdus=tuple(t[1]))
            )
            return mostly(request, signed, 2)
        if op.api == "ss" and any(f"/{flow}/" in op.path for flow in MEMBERSHIP_FLOWS):
            # Half the time, the real flow: a template from make_join/make_leave (or an invite built on
            # the room's state), signed by the remote server, then tampered with or not.
            member = next(e for e in load_event_schemas() if e.event_type == "m.room.member")
            spec = st.builds(
                PduSpec,
                st.just("m.room.member"),
                st.none(),
                mostly(st.just({}), self.schemas.for_schema(member.content), 3),
                st.none(),
                mostly(st.just("none"), st.sampled_from(PDU_MUTATIONS), 2),
            )
            flow = st.tuples(request, spec).map(lambda t: replace(t[0], auth="signed", pdus=(t[1],)))
            return mostly(request, flow, 2)
        return request

    def pdu_spec(self) -> st.SearchStrategy[PduSpec]:
        def for_type(event: EventSchema) -> st.SearchStrategy[PduSpec]:
            if event.state_key is None:
                state_key: st.SearchStrategy[str | None] = st.none()
            elif event.state_key.get("pattern") == "^$":
                state_key = st.just("")
            else:
                state_key = mostly(from_pool(self.world, "user_ids"), text(), 4)
            depth = mostly(st.none(), st.sampled_from(EDGE_INTS), 6)
            mutation = mostly(st.just("none"), st.sampled_from(PDU_MUTATIONS), 2)
            content = self.schemas.for_schema(event.content)
            return st.builds(PduSpec, st.just(event.event_type), state_key, content, depth, mutation)

        return st.sampled_from(load_event_schemas()).flatmap(for_type)

    def typed_event(
        self, names: list[str], path_values: st.SearchStrategy[tuple[str, ...]]
    ) -> st.SearchStrategy[tuple[tuple[str, ...], tuple[bytes | None, str | None]]]:
        def for_type(event: EventSchema) -> st.SearchStrategy[Any]:
            overrides: dict[str, st.SearchStrategy[str]] = {"eventType": st.just(event.event_type)}
            if event.state_key is not None:
                empty = event.state_key.get("pattern") == "^$"
                overrides["stateKey"] = (
                    st.just("") if empty else mostly(from_pool(self.world, "user_ids"), text(), 4)
                )
            content = self.schemas.for_schema(event.content).map(
                lambda v: (json.dumps(v).encode(), "application/json")
            )
            values = st.tuples(path_values, st.fixed_dictionaries(overrides)).map(
                lambda t: tuple(t[1].get(n, v) for n, v in zip(names, t[0], strict=True))
            )
            return st.tuples(values, content)

        return st.sampled_from(load_event_schemas()).flatmap(for_type)

    def _assemble(
        self,
        op: Operation,
        path_and_body: tuple[tuple[str, ...], tuple[bytes | None, str | None]],
        query: tuple[tuple[Param, list[str], int], ...],
        auth: str,
    ) -> FuzzRequest:
        path_values, body = path_and_body
        path = op.path
        for name, value in zip(path_param_names(op.path), path_values, strict=True):
            path = path.replace("{" + name + "}", _encoded(value), 1)
        pairs: list[tuple[str, str]] = []
        for param, values, roll in query:
            # Required parameters are nearly always sent; optional ones about half the time.
            if roll < (9 if param.required else 5):
                pairs += [(param.name, v if param.name == "filter" else v[:MAX_ENCODED]) for v in values]
        return FuzzRequest(op, path, tuple(pairs), body[0], body[1], auth)
