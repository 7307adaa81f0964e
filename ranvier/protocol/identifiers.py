"""Identifier grammar from the spec appendix ("Identifier Grammar").

Parsing functions return ``NewType``s so that a value typed ``UserId`` has been checked. Over federation the
historical user-id grammar is accepted (any code point but ``:`` and NUL); locally created ids must use the
strict one.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import NewType

from .errors import InvalidIdentifier

UserId = NewType("UserId", str)
RoomId = NewType("RoomId", str)
EventId = NewType("EventId", str)
RoomAlias = NewType("RoomAlias", str)
ServerName = NewType("ServerName", str)

MAX_ID_BYTES = 255

# Appendix "Server Name": hostname / IPv4 / [IPv6], optional port. The patterns are used with fullmatch and
# spell out [0-9]: "$" would accept a trailing newline and "\d" any Unicode digit.
_DNS_NAME = r"[A-Za-z0-9\-.]{1,255}"
_IPV4 = r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"
_IPV6 = r"\[[0-9A-Fa-f:.]{2,45}\]"
_SERVER_NAME_RE = re.compile(rf"(?:{_IPV4}|{_IPV6}|{_DNS_NAME})(?::([0-9]{{1,5}}))?")
# Appendix "User Identifiers" (since v1.8 of the spec): the grammar for ids we create.
_STRICT_LOCALPART_RE = re.compile(r"[a-z0-9._=\-/+]+")


# v12 (MSC4291, appendix "Room IDs"): "!" + the create event's reference hash in URL-safe unpadded base64,
# i.e. exactly 43 characters for a sha256 digest.
_HASH_ROOM_ID_RE = re.compile(r"![A-Za-z0-9_\-]{43}")


@functools.lru_cache(maxsize=4096)  # every PDU's sender names a server, and few servers recur a lot
def is_valid_server_name(name: str) -> bool:
    m = _SERVER_NAME_RE.fullmatch(name)
    if m is None:
        return False
    if name.startswith("["):
        # "IPv6 literals must be as specified by RFC3513, section 2.2" (appendix "Server Name").
        try:
            ipaddress.IPv6Address(name[1 : name.index("]")])
        except ValueError:
            return False
    port = m.group(1)
    return port is None or 0 < int(port) < 65536


def parse_server_name(name: str) -> ServerName:
    if not isinstance(name, str) or not is_valid_server_name(name):
        raise InvalidIdentifier(f"invalid server name: {name!r}")
    return ServerName(name)


def _split_sigil_id(value: object, sigil: str, kind: str) -> tuple[str, str]:
    if not isinstance(value, str) or not value.startswith(sigil):
        raise InvalidIdentifier(f"{kind} must be a string starting with {sigil!r}: {value!r}")
    # at most 63 code points cannot exceed 255 UTF-8 bytes: skip the encode for the usual short ids
    if len(value) > MAX_ID_BYTES // 4 and len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise InvalidIdentifier(f"{kind} exceeds {MAX_ID_BYTES} bytes")
    local, sep, domain = value[1:].partition(":")
    if not sep:
        raise InvalidIdentifier(f"{kind} has no ':domain' part: {value!r}")
    if "\x00" in local:
        raise InvalidIdentifier(f"{kind} contains NUL")
    if not local.isascii() and _has_surrogate(local):
        # Appendix: localparts may hold "any legal non-surrogate Unicode code points except ':' and NUL".
        raise InvalidIdentifier(f"{kind} contains a surrogate code point")
    if not is_valid_server_name(domain):
        raise InvalidIdentifier(f"{kind} has an invalid server name: {value!r}")
    return local, domain


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def parse_user_id(value: object, *, strict: bool = False) -> UserId:
    """Parse a user id; ``strict`` applies the current grammar (for ids we create)."""
    local, _ = _split_sigil_id(value, "@", "user id")
    if strict and not _STRICT_LOCALPART_RE.fullmatch(local):
        raise InvalidIdentifier(f"user id localpart has characters outside [a-z0-9._=-/+]: {value!r}")
    return UserId(value)  # type: ignore[arg-type]


def is_valid_user_id(value: object) -> bool:
    try:
        parse_user_id(value)
    except InvalidIdentifier:
        return False
    return True


def is_valid_localpart(localpart: str) -> bool:
    return bool(_STRICT_LOCALPART_RE.fullmatch(localpart))


def parse_room_alias(value: object) -> RoomAlias:
    _split_sigil_id(value, "#", "room alias")
    return RoomAlias(value)  # type: ignore[arg-type]


def parse_room_id(value: object, *, domainless: bool = False) -> RoomId:
    """Parse a room id; ``domainless`` is room version 12's ``!`` + reference hash form."""
    if domainless:
        if not isinstance(value, str) or not _HASH_ROOM_ID_RE.fullmatch(value):
            raise InvalidIdentifier(
                f"room id must be '!' + a URL-safe base64 sha256 in this room version: {value!r}"
            )
        return RoomId(value)
    _split_sigil_id(value, "!", "room id")
    return RoomId(value)  # type: ignore[arg-type]


def parse_event_id(value: object, *, with_domain: bool = False) -> EventId:
    if not isinstance(value, str) or not value.startswith("$") or len(value) < 2:
        raise InvalidIdentifier(f"event id must be a string starting with '$': {value!r}")
    if with_domain:
        _split_sigil_id(value, "$", "event id")
    elif len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise InvalidIdentifier("event id exceeds 255 bytes")
    return EventId(value)


def server_of(identifier: str) -> ServerName:
    """The server name of a sigil:localpart:domain identifier (user id, alias, v1-v11 room/event id)."""
    _, sep, domain = identifier.partition(":")
    if not sep:
        raise InvalidIdentifier(f"identifier has no domain: {identifier!r}")
    return ServerName(domain)
