"""The body of a simplified sliding sync request (MSC4186), read into frozen dataclasses; anything that
does not fit raises ``ValueError`` with a message for the client (the HTTP edge answers 400 M_BAD_JSON, as
Synapse 1.163's request model does).

The fields and their limits follow Synapse's: ``required_state`` and ``timeline_limit`` (0 to 1000) are
required for every list and subscription, at most 100 lists with names of at most 64 characters, ranges
of two non-negative integers (inclusive), extensions off unless ``enabled`` and unknown ones ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .required_state import RequiredState

MAX_LISTS = 100
MAX_LIST_NAME = 64
MAX_TIMELINE_LIMIT = 1000
EXTENSIONS = ("to_device", "e2ee", "account_data", "receipts", "typing")


@dataclass(frozen=True, slots=True)
class RoomParams:
    required_state: Any  # the raw list; parsed per user by RequiredState.parse
    timeline_limit: int


@dataclass(frozen=True, slots=True)
class ListFilters:
    is_dm: bool | None = None
    spaces: tuple[str, ...] | None = None
    is_encrypted: bool | None = None
    is_invite: bool | None = None
    room_types: tuple[str | None, ...] | None = None
    not_room_types: tuple[str | None, ...] | None = None
    tags: tuple[str, ...] | None = None
    not_tags: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ListParams:
    room: RoomParams
    ranges: tuple[tuple[int, int], ...] | None = None
    filters: ListFilters = field(default_factory=ListFilters)


@dataclass(frozen=True, slots=True)
class ExtensionParams:
    enabled: bool = False
    lists: tuple[str, ...] = ("*",)
    rooms: tuple[str, ...] = ("*",)
    since: int | None = None  # to_device only: the previous response's next_batch
    limit: int = 100  # to_device only


@dataclass(frozen=True, slots=True)
class SlidingRequest:
    conn_id: str | None = None
    lists: dict[str, ListParams] = field(default_factory=dict)
    room_subscriptions: dict[str, RoomParams] = field(default_factory=dict)
    extensions: dict[str, ExtensionParams] = field(default_factory=dict)

    def extension(self, name: str) -> ExtensionParams | None:
        ext = self.extensions.get(name)
        return ext if ext is not None and ext.enabled else None


def _strict_int(value: Any, where: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an integer")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{where} must be at most {maximum}")
    return value


def _optional_bool(obj: dict[str, Any], key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{where}.{key} must be a boolean")
    return value


def _strings(value: Any, where: str, nullable: bool = False) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) or (nullable and v is None) for v in value):
        raise ValueError(f"{where} must be a list of strings")
    return tuple(value)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")
    return value


def _room_params(raw: Any, where: str) -> RoomParams:
    obj = _object(raw, where)
    if "required_state" not in obj:
        raise ValueError(f"{where}.required_state is required")
    if "timeline_limit" not in obj:
        raise ValueError(f"{where}.timeline_limit is required")
    limit = _strict_int(obj["timeline_limit"], f"{where}.timeline_limit", 0, MAX_TIMELINE_LIMIT)
    RequiredState.parse(obj["required_state"], "")  # its shape; $ME is read per user later
    return RoomParams(obj["required_state"], limit)


def _filters(raw: Any, where: str) -> ListFilters:
    if raw is None:
        return ListFilters()
    obj = _object(raw, where)
    return ListFilters(
        is_dm=_optional_bool(obj, "is_dm", where),
        spaces=_strings(obj.get("spaces"), f"{where}.spaces"),
        is_encrypted=_optional_bool(obj, "is_encrypted", where),
        is_invite=_optional_bool(obj, "is_invite", where),
        room_types=_strings(obj.get("room_types"), f"{where}.room_types", nullable=True),
        not_room_types=_strings(obj.get("not_room_types"), f"{where}.not_room_types", nullable=True),
        tags=_strings(obj.get("tags"), f"{where}.tags"),
        not_tags=_strings(obj.get("not_tags"), f"{where}.not_tags"),
    )


def _ranges(raw: Any, where: str) -> tuple[tuple[int, int], ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ValueError(f"{where} must be a list of [start, end] pairs")
    out: list[tuple[int, int]] = []
    for pair in raw:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(f"{where} must be a list of [start, end] pairs")
        start = _strict_int(pair[0], f"{where} start", 0)
        end = _strict_int(pair[1], f"{where} end", 0)
        out.append((start, end))
    return tuple(out)


def _list(raw: Any, where: str) -> ListParams:
    obj = _object(raw, where)
    room = _room_params(obj, where)
    slow = obj.get("slow_get_all_rooms")
    if slow is not None and not isinstance(slow, bool):
        raise ValueError(f"{where}.slow_get_all_rooms must be a boolean")
    # slow_get_all_rooms: every room, the ranges ignored.
    ranges = None if slow else _ranges(obj.get("ranges"), f"{where}.ranges")
    return ListParams(room, ranges, _filters(obj.get("filters"), f"{where}.filters"))


def _extension(name: str, raw: Any) -> ExtensionParams:
    where = f"extensions.{name}"
    obj = _object(raw, where)
    enabled = _optional_bool(obj, "enabled", where) or False
    lists = _strings(obj.get("lists", ["*"]), f"{where}.lists") or ()
    rooms = _strings(obj.get("rooms", ["*"]), f"{where}.rooms") or ()
    since: int | None = None
    limit = 100
    if name == "to_device":
        raw_since = obj.get("since")
        if raw_since is not None:
            if not isinstance(raw_since, str) or not raw_since.isdigit() or len(raw_since) > 18:
                raise ValueError(f"'{where}.since' is invalid (should look like an int)")
            since = int(raw_since)
        if "limit" in obj:
            limit = _strict_int(obj["limit"], f"{where}.limit")
    return ExtensionParams(enabled, lists, rooms, since, limit)


def parse_request(body: Any) -> SlidingRequest:
    obj = _object(body, "the request body")
    conn_id = obj.get("conn_id")
    if conn_id is not None and not isinstance(conn_id, str):
        raise ValueError("conn_id must be a string")
    lists: dict[str, ListParams] = {}
    raw_lists = obj.get("lists")
    if raw_lists is not None:
        raw_lists = _object(raw_lists, "lists")
        if len(raw_lists) > MAX_LISTS:
            raise ValueError(f"Max lists: {MAX_LISTS} but saw {len(raw_lists)}")
        for name, raw in raw_lists.items():
            if len(name) > MAX_LIST_NAME:
                raise ValueError(f"list names are at most {MAX_LIST_NAME} characters")
            lists[name] = _list(raw, f"lists.{name}")
    subscriptions: dict[str, RoomParams] = {}
    raw_subs = obj.get("room_subscriptions")
    if raw_subs is not None:
        for room_id, raw in _object(raw_subs, "room_subscriptions").items():
            subscriptions[room_id] = _room_params(raw, f"room_subscriptions.{room_id}")
    extensions: dict[str, ExtensionParams] = {}
    raw_ext = obj.get("extensions")
    if raw_ext is not None:
        for name, raw in _object(raw_ext, "extensions").items():
            if name in EXTENSIONS and raw is not None:  # unknown extensions are ignored (MSC4186)
                extensions[name] = _extension(name, raw)
    return SlidingRequest(conn_id, lists, subscriptions, extensions)
