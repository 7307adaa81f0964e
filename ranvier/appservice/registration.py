"""Application service registration files (Synapse's YAML format) and namespace matching.

AS "Registration": ``id``, ``url`` (null: events are never pushed), ``as_token``, ``hs_token``,
``sender_localpart``, ``namespaces`` (``users``, ``aliases``, ``rooms``: lists of ``{regex, exclusive}``),
``rate_limited``, ``protocols``, ``receive_ephemeral``, plus the unstable keys bridges still send
(MSC2409 ``de.sorunome.msc2409.push_ephemeral``, MSC3202 ``org.matrix.msc3202``). Pure: data in, data out.
The regexes are matched against the whole identifier (Python ``re.fullmatch``), as Synapse does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

NAMESPACE_KINDS = ("users", "aliases", "rooms")


class RegistrationError(Exception):
    """A registration file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Namespace:
    regex: re.Pattern[str]
    exclusive: bool

    def matches(self, value: str) -> bool:
        return self.regex.fullmatch(value) is not None

    @property
    def prefix(self) -> str:
        """A literal prefix every match starts with ("" if none can be told): lets storage narrow a room's
        members before the regex is applied."""
        return literal_prefix(self.regex.pattern)


_LITERAL = re.compile(r"[A-Za-z0-9@:#!_\-=/,;%&'\"<>~` ]")
_ESCAPED_LITERAL = set(".-_@:#!+=/$^*?()[]{}|\\")
_QUANTIFIERS = set("*?{")


def literal_prefix(pattern: str) -> str:
    """The literal characters a regex's every (full) match begins with, conservatively: it stops at the
    first metacharacter, drops a character made optional by a following ``*``, ``?`` or ``{``, and gives
    "" for any pattern with an alternation or inline flags (``(?i)``)."""
    if "|" in pattern.replace("\\|", "") or pattern.startswith("(?"):
        return ""
    out: list[str] = []
    i = 1 if pattern.startswith("^") else 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and pattern[i + 1] in _ESCAPED_LITERAL:
            char, i = pattern[i + 1], i + 2
        elif _LITERAL.fullmatch(c):
            char, i = c, i + 1
        else:
            break
        if i < len(pattern) and pattern[i] in _QUANTIFIERS:
            break  # this character may be absent
        out.append(char)
        if i < len(pattern) and pattern[i] == "+":
            break  # present, but repeated: what follows is not fixed
    return "".join(out)


@dataclass(frozen=True, slots=True)
class AppService:
    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender: str  # the full user id of sender_localpart
    users: tuple[Namespace, ...] = ()
    aliases: tuple[Namespace, ...] = ()
    rooms: tuple[Namespace, ...] = ()
    rate_limited: bool = True
    protocols: tuple[str, ...] = ()
    receive_ephemeral: bool = False
    # MSC3202: to-device messages, device lists and key counts; masquerading as a device.
    msc3202: bool = False
    source: str = field(default="", compare=False)

    # -- namespaces ------------------------------------------------------------------------------

    def is_interested_in_user(self, user_id: str) -> bool:
        """In a user namespace (exclusive or not), or the appservice's own sender."""
        return user_id == self.sender or any(ns.matches(user_id) for ns in self.users)

    def owns_user_exclusively(self, user_id: str) -> bool:
        return user_id == self.sender or any(ns.exclusive and ns.matches(user_id) for ns in self.users)

    def is_interested_in_alias(self, alias: str) -> bool:
        return any(ns.matches(alias) for ns in self.aliases)

    def owns_alias_exclusively(self, alias: str) -> bool:
        return any(ns.exclusive and ns.matches(alias) for ns in self.aliases)

    def is_interested_in_room(self, room_id: str) -> bool:
        return any(ns.matches(room_id) for ns in self.rooms)


class AppServices:
    """Every registered appservice, with the look-ups the rest of the server makes."""

    def __init__(self, services: Sequence[AppService] = ()) -> None:
        self.all: tuple[AppService, ...] = tuple(services)
        self._by_token = {s.as_token: s for s in services}
        self._by_id = {s.id: s for s in services}

    def __bool__(self) -> bool:
        return bool(self.all)

    def by_as_token(self, token: str) -> AppService | None:
        return self._by_token.get(token)

    def by_id(self, as_id: str) -> AppService | None:
        return self._by_id.get(as_id)

    def exclusive_owner_of_user(self, user_id: str) -> AppService | None:
        return next((s for s in self.all if s.owns_user_exclusively(user_id)), None)

    def exclusive_owner_of_alias(self, alias: str) -> AppService | None:
        return next((s for s in self.all if s.owns_alias_exclusively(alias)), None)

    def interested_in_user(self, user_id: str) -> list[AppService]:
        return [s for s in self.all if s.is_interested_in_user(user_id)]

    def interested_in_alias(self, alias: str) -> list[AppService]:
        return [s for s in self.all if s.is_interested_in_alias(alias)]

    def with_protocol(self, protocol: str) -> list[AppService]:
        return [s for s in self.all if protocol in s.protocols]


# -- parsing -----------------------------------------------------------------------------------------


def _field_error(source: str, key: str, message: str) -> RegistrationError:
    return RegistrationError(f"{source}: {key}: {message}")


def _require_str(data: dict[str, Any], key: str, source: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise _field_error(source, key, "is required and must be a non-empty string")
    return value


def _parse_namespaces(data: Any, kind: str, source: str) -> tuple[Namespace, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise _field_error(source, f"namespaces.{kind}", "must be a list")
    out = []
    for i, entry in enumerate(data):
        where = f"namespaces.{kind}[{i}]"
        if not isinstance(entry, dict):
            raise _field_error(source, where, "must be a mapping with 'regex' and 'exclusive'")
        regex = entry.get("regex")
        if not isinstance(regex, str):
            raise _field_error(source, f"{where}.regex", "is required and must be a string")
        exclusive = entry.get("exclusive", False)
        if not isinstance(exclusive, bool):
            raise _field_error(source, f"{where}.exclusive", "must be true or false")
        try:
            pattern = re.compile(regex)
        except re.error as e:
            raise _field_error(
                source, f"{where}.regex", f"invalid regular expression {regex!r}: {e}"
            ) from None
        out.append(Namespace(pattern, exclusive))
    return tuple(out)


def parse_registration(data: Any, server_name: str, source: str = "<registration>") -> AppService:
    if not isinstance(data, dict):
        raise RegistrationError(f"{source}: must be a YAML mapping")
    as_id = _require_str(data, "id", source)
    as_token = _require_str(data, "as_token", source)
    hs_token = _require_str(data, "hs_token", source)
    localpart = _require_str(data, "sender_localpart", source)
    if localpart.startswith("@") or ":" in localpart:
        raise _field_error(source, "sender_localpart", "must be a localpart, not a user id")
    url = data.get("url")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise _field_error(source, "url", "must be an http(s) URL or null")
    namespaces = data.get("namespaces", {})
    if namespaces is None:
        namespaces = {}
    if not isinstance(namespaces, dict):
        raise _field_error(source, "namespaces", "must be a mapping")
    unknown = set(namespaces) - set(NAMESPACE_KINDS)
    if unknown:
        raise _field_error(source, "namespaces", f"unknown kinds {sorted(unknown)}")
    parsed = {kind: _parse_namespaces(namespaces.get(kind), kind, source) for kind in NAMESPACE_KINDS}
    for key in (
        "rate_limited",
        "receive_ephemeral",
        "de.sorunome.msc2409.push_ephemeral",
        "org.matrix.msc3202",
    ):
        if key in data and not isinstance(data[key], bool):
            raise _field_error(source, key, "must be true or false")
    protocols = data.get("protocols") or []
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise _field_error(source, "protocols", "must be a list of strings")
    return AppService(
        id=as_id,
        url=url.rstrip("/") if isinstance(url, str) else None,
        as_token=as_token,
        hs_token=hs_token,
        sender=f"@{localpart}:{server_name}",
        users=parsed["users"],
        aliases=parsed["aliases"],
        rooms=parsed["rooms"],
        rate_limited=bool(data.get("rate_limited", True)),
        protocols=tuple(protocols),
        receive_ephemeral=bool(
            data.get("receive_ephemeral", False) or data.get("de.sorunome.msc2409.push_ephemeral", False)
        ),
        msc3202=bool(data.get("org.matrix.msc3202", False)),
        source=source,
    )


def load_registrations(paths: Iterable[str], server_name: str, *, warn: bool = True) -> AppServices:
    """Read and check every registration file; raise RegistrationError naming the file and field."""
    services: list[AppService] = []
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise RegistrationError(f"{path}: cannot read: {e.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise RegistrationError(f"{path}: not valid YAML: {e}") from None
        services.append(parse_registration(data, server_name, str(path)))
    check_unique(services)
    if warn:
        for warning in overlapping_exclusive_namespaces(services):
            logger.warning("%s", warning)
    return AppServices(services)


def check_unique(services: Sequence[AppService]) -> None:
    seen: dict[tuple[str, str], AppService] = {}
    for s in services:
        for key, value in (("id", s.id), ("as_token", s.as_token), ("hs_token", s.hs_token)):
            other = seen.get((key, value))
            if other is not None:
                raise _field_error(s.source, key, f"the same {key} as in {other.source}")
            seen[(key, value)] = s
        other = seen.get(("as_token", s.hs_token)) or seen.get(("hs_token", s.as_token))
        if other is not None and other is not s:
            raise _field_error(s.source, "as_token", f"a token shared with {other.source}")
        if s.as_token == s.hs_token:
            raise _field_error(s.source, "hs_token", "must differ from as_token")


def overlapping_exclusive_namespaces(services: Sequence[AppService]) -> list[str]:
    """Warnings for exclusive namespaces of two appservices that may claim the same names. Whether two
    regexes intersect is not decidable cheaply, so this compares the literal patterns and each
    pattern's sender against the others (what operators get wrong in practice: copied files)."""
    warnings = []
    for i, a in enumerate(services):
        for b in services[i + 1 :]:
            for kind in NAMESPACE_KINDS:
                a_ns = [ns.regex.pattern for ns in getattr(a, kind) if ns.exclusive]
                b_ns = [ns.regex.pattern for ns in getattr(b, kind) if ns.exclusive]
                for pattern in sorted(set(a_ns) & set(b_ns)):
                    warnings.append(
                        f"appservices {a.id!r} ({a.source}) and {b.id!r} ({b.source}) both claim the "
                        f"exclusive {kind} namespace {pattern}"
                    )
            if b.owns_user_exclusively(a.sender) and b.sender != a.sender:
                warnings.append(f"appservice {b.id!r} claims {a.id!r}'s sender {a.sender} exclusively")
            if a.owns_user_exclusively(b.sender) and a.sender != b.sender:
                warnings.append(f"appservice {a.id!r} claims {b.id!r}'s sender {b.sender} exclusively")
    return warnings
