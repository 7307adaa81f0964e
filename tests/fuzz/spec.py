"""The Matrix OpenAPI definitions (client-server and server-server) as a flat list of operations.

The spec's files are OpenAPI 3.1 YAML, one file per endpoint family, with ``$ref``s that point into other
files (``definitions/errors/error.yaml``, ``../client-server/definitions/...#/pointer``) and into the file
itself (``#/components/parameters/roomId``). We resolve every ``$ref`` in what a request needs (parameters
and request bodies) into plain inline JSON Schema; a cycle is cut with an empty schema (anything goes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.spec_path import SPEC

API_DIR = SPEC / "data" / "api"
METHODS = ("get", "put", "post", "delete")


@dataclass(frozen=True)
class Param:
    name: str
    location: str  # "path", "query" or "header"
    required: bool
    schema: dict[str, Any]


@dataclass(frozen=True)
class Operation:
    api: str  # "cs" or "ss"
    method: str  # upper case
    path: str  # the full path template, e.g. /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
    operation_id: str
    params: tuple[Param, ...]
    body_schema: dict[str, Any] | None  # the JSON request body, if the operation takes one
    body_content_type: str | None  # the content type of a non-JSON body (media uploads)
    authenticated: bool
    source: str  # the spec file, relative to the api directory
    tags: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"


@cache
def _load(path: Path) -> Any:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def _pointer(doc: Any, pointer: str) -> Any:
    for part in [p for p in pointer.split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def resolve(node: Any, base: Path, stack: tuple[str, ...] = ()) -> Any:
    """``node`` (found in file ``base``) with every ``$ref`` replaced by what it points to."""
    if isinstance(node, list):
        return [resolve(n, base, stack) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node and isinstance(node["$ref"], str):
        ref = node["$ref"]
        file_part, _, pointer = ref.partition("#")
        target_file = (base.parent / file_part).resolve() if file_part else base
        key = f"{target_file}#{pointer}"
        if key in stack:
            return {}  # a recursive schema: cut the cycle with "anything"
        target = _pointer(_load(target_file), pointer)
        resolved = resolve(target, target_file, (*stack, key))
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        if siblings and isinstance(resolved, dict):
            resolved = {**resolved, **resolve(siblings, base, stack)}
        return resolved
    return {k: resolve(v, base, stack) for k, v in node.items()}


def _base_path(doc: dict[str, Any]) -> str:
    for server in doc.get("servers", []):
        default = server.get("variables", {}).get("basePath", {}).get("default")
        if default is not None:
            return str(default)
    return ""


def _params(raw: list[Any], base: Path) -> list[Param]:
    out = []
    for p in resolve(raw, base):
        if p.get("in") not in ("path", "query", "header"):
            continue
        out.append(Param(p["name"], p["in"], bool(p.get("required")), p.get("schema") or {"type": "string"}))
    return out


def _operations_in(file: Path, api: str) -> list[Operation]:
    doc = _load(file)
    base_path = _base_path(doc)
    ops = []
    for path, item in (doc.get("paths") or {}).items():
        shared = _params(item.get("parameters", []), file)
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            params = {(p.name, p.location): p for p in shared}
            params.update({(p.name, p.location): p for p in _params(op.get("parameters", []), file)})
            body_schema, content_type = None, None
            request_body = resolve(op.get("requestBody"), file) if op.get("requestBody") else None
            if request_body:
                content = request_body.get("content", {})
                if "application/json" in content:
                    body_schema = content["application/json"].get("schema") or {}
                elif content:
                    content_type = next(iter(content))
            ops.append(
                Operation(
                    api=api,
                    method=method.upper(),
                    # peeking_events.yaml spells "/events " with a space, to differ from old_sync.yaml's key.
                    path=base_path + path.strip(),
                    operation_id=op.get("operationId", f"{method}{path}"),
                    params=tuple(params.values()),
                    body_schema=body_schema,
                    body_content_type=content_type,
                    authenticated=bool(op.get("security")),
                    source=str(file.relative_to(API_DIR)),
                    tags=tuple(op.get("tags", ())),
                )
            )
    return ops


@cache
def load_operations(api: str) -> tuple[Operation, ...]:
    """Every operation of the client-server (``cs``) or server-server (``ss``) API, in a stable order."""
    folder = {"cs": "client-server", "ss": "server-server"}[api]
    ops: list[Operation] = []
    for file in sorted((API_DIR / folder).glob("*.yaml")):
        ops += _operations_in(file, api)
    ops.sort(key=lambda o: (o.path, o.method))
    return tuple(ops)


PATH_PARAM = re.compile(r"\{([^}]+)\}")


def path_param_names(template: str) -> list[str]:
    return PATH_PARAM.findall(template)


EVENT_SCHEMA_DIR = SPEC / "data" / "event-schemas" / "schema"


@dataclass(frozen=True)
class EventSchema:
    event_type: str
    content: dict[str, Any]
    state_key: dict[str, Any] | None  # the state_key's schema, for state events


@cache
def load_event_schemas() -> tuple[EventSchema, ...]:
    """The content schema of every event type the spec defines (one per type; ``m.room.message`` by its
    generic schema), for bodies of ``/send/{eventType}`` and ``/state/{eventType}``."""
    out: dict[str, EventSchema] = {}
    for file in sorted(EVENT_SCHEMA_DIR.glob("*.yaml")):
        event_type = file.stem.split("$", 1)[0]
        if event_type in out and "$" in file.stem:
            continue
        schema = resolve(_load(file), file)
        props = schema.get("properties", {})
        for part in schema.get("allOf", []):
            props = {**part.get("properties", {}), **props}
        content = props.get("content")
        if not isinstance(content, dict):
            continue
        state_key = props.get("state_key") if isinstance(props.get("state_key"), dict) else None
        out[event_type] = EventSchema(event_type, content, state_key)
    return tuple(out[k] for k in sorted(out))
