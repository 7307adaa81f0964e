"""The PDU type: validated on construction, with typed accessors, hash and signature checks, and building.

A ``Pdu`` that exists has passed the format checks for its room version (pdu_v1 ... pdu_v12 schemas, the
65,536-byte limit and the identifier grammar), so the rest of the server never re-checks shapes.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeGuard

import nacl.signing
import orjson
from unpaddedbase64 import encode_base64

from .canonical_json import (
    MAX_SAFE_INT,
    MIN_SAFE_INT,
    ORJSON_OPTIONS,
    check_canonical,
    encode_canonical_json,
    encode_text,
    encode_unchecked,
)
from .errors import (
    CanonicalJsonError,
    EventTooLarge,
    FormatError,
    HashMismatch,
    InvalidIdentifier,
    SignatureError,
)
from .hashes import compute_content_hash
from .identifiers import (
    MAX_ID_BYTES,
    EventId,
    RoomId,
    ServerName,
    UserId,
    parse_event_id,
    parse_room_id,
    parse_user_id,
    server_of,
)
from .redaction import CONTENT_KEEPING_TYPES, kept_top_level_keys, redact_content, redact_event
from .room_versions import EventIdFormat, RedactionRules, RoomVersion, get_room_version
from .signing import SigningKey, decode_unpadded_base64, verify_signature_bytes

MAX_PDU_BYTES = 65536
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
MAX_DEPTH = 2**63 - 1

StateKey = tuple[str, str]


class VerifyKeyInfo(NamedTuple):
    key: nacl.signing.VerifyKey
    # ms since epoch; for room v5+ a key must be valid at the event's origin_server_ts. None: no expiry.
    valid_until_ts: int | None


# (server_name, key_id) -> the key, or None if unknown. The caller fetches keys first (sans-I/O).
KeyLookup = Callable[[str, str], VerifyKeyInfo | None]

_NOT_HASHED = ("unsigned", "signatures", "hashes")
# What is signed (and hashed into v3+ event ids): the redacted event without "signatures" (S2S "Signing
# Events"; "unsigned" is never kept by redaction).
_SIGNED_V1 = kept_top_level_keys(get_room_version("10")) - {"signatures"}
_SIGNED_V11 = kept_top_level_keys(get_room_version("11")) - {"signatures"}
_V11_REDACTION = RedactionRules.V11
_DOMAIN = EventIdFormat.DOMAIN
# A str of at most this many code points cannot exceed MAX_ID_BYTES of UTF-8 (see _too_long).
_SHORT = MAX_ID_BYTES // 4


def _str_field(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if type(value) is not str:
        raise FormatError(f"'{key}' must be a string")
    return value


def _bounded_str(d: Mapping[str, Any], key: str, limit: int = MAX_ID_BYTES) -> str:
    value = _str_field(d, key)
    if _too_long(value, limit):
        raise FormatError(f"'{key}' exceeds {limit} bytes")
    return value


def _int_field(d: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    value = d.get(key)
    if type(value) is not int or not lo <= value <= hi:
        raise FormatError(f"'{key}' must be an integer in [{lo}, {hi}]")
    return value


# Members whose every leaf the field checks have already pinned down to strings.
_CHECKED_V1 = frozenset({"signatures"})
_CHECKED_V3 = frozenset({"signatures", "prev_events", "auth_events"})  # v3+: lists of event id strings


def _check_members(d: Mapping[str, Any], room_version: RoomVersion) -> bool:
    """``check_canonical`` of every top-level member of a PDU for its room version (the hot path of every
    received PDU), minus the walks the field checks made redundant.

    Returns whether the whole event is in the strict domain (always so from room version 6 on, where
    anything else raises): only then may orjson encode it (see canonical_json)."""
    strict = room_version.strict_canonical_json  # since v6 (v6-canonical-json fragment)
    checked = _CHECKED_V1 if room_version.event_id_format is EventIdFormat.DOMAIN else _CHECKED_V3
    in_domain = True
    for k, v in d.items():
        if type(k) is not str:
            raise CanonicalJsonError(f"object key {k!r} is not a string")
        t = type(v)
        if t is str or k in checked or (k == "hashes" and len(v) == 1):  # __init__ checked their leaves
            continue
        if t is int:
            if not MIN_SAFE_INT <= v <= MAX_SAFE_INT:
                if strict:
                    raise CanonicalJsonError(f"'{k}' {v} is outside [-(2**53)+1, (2**53)-1]")
                in_domain = False
            continue
        try:
            check_canonical(v)
        except CanonicalJsonError:
            if strict:
                raise
            check_canonical(v, strict)  # v1-v5: floats and big integers are allowed, not NaN or sets
            in_domain = False
    return in_domain


_HASHES_PREFIX = len(',"hashes":')
_SIGNATURES_PREFIX = len(',"signatures":')


# The senders and rooms of received PDUs are few and recur on every event: their ids are parsed once.
# Only valid ids are remembered (a refused one raises, which lru_cache does not keep), at most this many.
_ID_CACHE = 4096


@functools.lru_cache(maxsize=_ID_CACHE)
def _parse_sender(value: str) -> UserId:
    return parse_user_id(value)


@functools.lru_cache(maxsize=_ID_CACHE)
def _parse_room_id(value: str, domainless: bool) -> RoomId:
    return parse_room_id(value, domainless=domainless)


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _too_long(value: str, limit: int = MAX_ID_BYTES) -> bool:
    # A str of at most limit // 4 code points cannot exceed limit UTF-8 bytes: skip the encode then.
    return len(value) > limit // 4 and len(value.encode("utf-8", "surrogatepass")) > limit


def _short_event_ids(value: object, limit: int) -> TypeGuard[list[EventId]]:
    """The common case of a v3+ ``prev_events``/``auth_events``: a list of at most ``limit`` strings that
    start with "$" and are too short to exceed MAX_ID_BYTES. False sends the list to ``_event_id_list``,
    which checks it in full (and raises)."""
    if type(value) is not list or len(value) > limit:
        return False
    for item in value:  # a loop, not all(): a generator costs more than the 1-3 ids it would check
        if type(item) is not str or item[:1] != "$" or len(item) > _SHORT:
            break
    else:
        return True
    return False


def _event_id_list(value: object, key: str, room_version: RoomVersion, limit: int) -> tuple[EventId, ...]:
    if not isinstance(value, list):
        raise FormatError(f"'{key}' must be a list")
    if len(value) > limit:
        raise FormatError(f"'{key}' has {len(value)} entries; at most {limit} are allowed")
    if room_version.event_id_format is EventIdFormat.DOMAIN:
        # v1-v2: [[event_id, {"sha256": ...}], ...]
        ids = []
        for item in value:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict)):
                raise FormatError(f"'{key}' entries must be [event_id, hashes] pairs in this room version")
            ids.append(parse_event_id(item[0], with_domain=True))
        return tuple(ids)
    for item in value:
        if type(item) is not str or item[:1] != "$" or _too_long(item):
            raise FormatError(f"'{key}' entries must be event ids")
    return tuple(value)


class Pdu:
    """A persistent data unit of a given room version.

    Immutable by convention: ``json`` is the wire form and must not be mutated; build a new Pdu instead.
    """

    __slots__ = (
        "_body_bytes",
        "_redacted_bytes",
        "auth_event_ids",
        "content",
        "depth",
        "event_id",
        "json",
        "origin_server_ts",
        "prev_event_ids",
        "room_id",
        "room_version",
        "sender",
        "state_key",
        "type",
    )

    room_version: RoomVersion
    json: dict[str, Any]
    event_id: EventId
    room_id: RoomId
    type: str
    state_key: str | None
    sender: str
    prev_event_ids: tuple[EventId, ...]
    auth_event_ids: tuple[EventId, ...]
    depth: int
    origin_server_ts: int
    content: dict[str, Any]

    def __init__(self, pdu: Mapping[str, Any], room_version: RoomVersion) -> None:
        # The hot path of every received PDU (about 6 us of Python beside 55 us of ed25519): the common
        # shapes are tested inline with exact types, and the helpers, which raise the errors, run only
        # when such a test fails. Every check is made either way.
        if type(pdu) is not dict and not isinstance(pdu, Mapping):
            raise FormatError("a PDU must be a JSON object")
        d = dict(pdu)
        domain_ids = room_version.event_id_format is _DOMAIN
        if not domain_ids:
            # v3+: the event id is derived, never carried; a stray one would change the reference hash.
            d.pop("event_id", None)
        self.room_version = room_version
        self.json = d
        get = d.get

        etype = get("type")
        if type(etype) is not str or len(etype) > _SHORT:
            etype = _bounded_str(d, "type")
        self.type = etype
        sender = get("sender")
        self.sender = _parse_sender(sender if type(sender) is str else _str_field(d, "sender"))
        state_key = get("state_key")
        if (state_key is not None or "state_key" in d) and (
            type(state_key) is not str or len(state_key) > _SHORT
        ):
            state_key = _bounded_str(d, "state_key")
        self.state_key = state_key
        content = get("content")
        if not isinstance(content, dict):
            raise FormatError("'content' must be an object")
        self.content = content
        depth = get("depth")
        if type(depth) is not int or not 0 <= depth <= MAX_DEPTH:
            depth = _int_field(d, "depth", 0, MAX_DEPTH)
        self.depth = depth
        ts = get("origin_server_ts")
        if type(ts) is not int or not -(2**63) <= ts < 2**63:
            ts = _int_field(d, "origin_server_ts", -(2**63), 2**63 - 1)
        self.origin_server_ts = ts
        hashes = get("hashes")
        if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
            raise FormatError("'hashes' must be an object with a 'sha256' string")
        sigs = get("signatures")
        if type(sigs) is not dict:
            raise FormatError("'signatures' must be an object")
        for by_server in sigs.values():
            if type(by_server) is not dict:
                raise FormatError("'signatures' must map server names to objects of strings")
            for sig in by_server.values():
                if type(sig) is not str:
                    raise FormatError("'signatures' must map server names to objects of strings")
        if "unsigned" in d and not isinstance(d["unsigned"], dict):
            raise FormatError("'unsigned' must be an object")
        if "redacts" in d and not room_version.redacts_in_content and not isinstance(d["redacts"], str):
            raise FormatError("'redacts' must be an event id")  # pdu_v1 ... pdu_v6 schemas
        prevs, auths = get("prev_events"), get("auth_events")
        if not domain_ids and _short_event_ids(prevs, MAX_PREV_EVENTS):
            self.prev_event_ids = tuple(prevs)
        else:
            self.prev_event_ids = _event_id_list(prevs, "prev_events", room_version, MAX_PREV_EVENTS)
        if not domain_ids and _short_event_ids(auths, MAX_AUTH_EVENTS):
            self.auth_event_ids = tuple(auths)
        else:
            self.auth_event_ids = _event_id_list(auths, "auth_events", room_version, MAX_AUTH_EVENTS)
        in_domain = _check_members(d, room_version)
        # The body (what the content hash covers) and the redacted form without "signatures" (what is
        # signed and, v3+, what the event id hashes) are each encoded once, by one call.
        body = d.copy()
        if "unsigned" in body:
            del body["unsigned"]
        del body["hashes"], body["signatures"]
        top = _SIGNED_V11 if room_version.redaction is _V11_REDACTION else _SIGNED_V1
        if body.keys() <= top:  # the usual event: redaction keeps every member but changes the content
            redacted = body.copy()
            redacted["hashes"] = hashes
        else:
            redacted = {k: v for k, v in d.items() if k in top}
        # Most events (messages) keep no content when redacted: skip the general algorithm for them.
        redacted["content"] = (
            redact_content(etype, content, room_version) if etype in CONTENT_KEEPING_TYPES else {}
        )
        if in_domain:
            try:
                body_bytes = orjson.dumps(body, option=ORJSON_OPTIONS)
                redacted_bytes = orjson.dumps(redacted, option=ORJSON_OPTIONS)
                tail_size = len(orjson.dumps(hashes, option=ORJSON_OPTIONS)) + len(
                    orjson.dumps(sigs, option=ORJSON_OPTIONS)
                )
            except orjson.JSONEncodeError:
                # A lone surrogate (encode_unchecked raises CanonicalJsonError) or deeper nesting than
                # orjson takes: the json encoder says which, or encodes it.
                in_domain = False
        if not in_domain:  # and v1-v5 events with floats or big integers
            body_bytes = encode_unchecked(body)
            redacted_bytes = encode_unchecked(redacted)
            tail_size = len(encode_unchecked(hashes)) + len(encode_unchecked(sigs))
        self._redacted_bytes = redacted_bytes
        self._body_bytes = body_bytes

        fmt = room_version.event_id_format
        if fmt is EventIdFormat.DOMAIN:
            self.event_id = parse_event_id(_str_field(d, "event_id"), with_domain=True)
        else:
            # A sha256 digest is 43 base64 characters and one "=" of padding, dropped (unpadded base64).
            b64 = binascii.b2a_base64(hashlib.sha256(redacted_bytes).digest(), newline=False)[:43]
            if fmt is EventIdFormat.URLSAFE_BASE64:
                b64 = b64.translate(_URLSAFE)
            self.event_id = EventId("$" + b64.decode("ascii"))

        if room_version.room_id_from_create_event and etype == "m.room.create" and self.state_key == "":
            # v12 (MSC4291): the create event has no room_id; the room id is derived from its event id.
            if "room_id" in d:
                raise FormatError("in this room version the m.room.create event must not have a room_id")
            self.room_id = RoomId("!" + self.event_id[1:])
        else:
            # InvalidIdentifier is a FormatError: a malformed room id is refused like a malformed sender.
            self.room_id = _parse_room_id(_str_field(d, "room_id"), room_version.room_id_from_create_event)

        # The size is "the complete event ... including any signatures" (CS "Size limits"): the body plus
        # ',"hashes":...' and ',"signatures":...', exactly. ``unsigned`` is not counted: it is not part of
        # the signed event and intermediaries may change it.
        size = len(body_bytes) + _HASHES_PREFIX + _SIGNATURES_PREFIX + tail_size
        if size > MAX_PDU_BYTES:
            raise EventTooLarge(f"event is {size} bytes of canonical JSON; the limit is {MAX_PDU_BYTES}")

    # -- accessors --------------------------------------------------------------------------------

    def json_text(self) -> str:
        """The whole event (``unsigned`` included) as JSON text, what storage keeps: the body encoded at
        construction, then the hashes, signatures and unsigned members, so that persisting a received
        event does not encode all of it again. The body's members are in canonical order, the others
        after them (one JSON object all the same: a reader parses it, nobody hashes this text)."""
        tail = []
        for key in _NOT_HASHED:
            if key in self.json:
                value = self.json[key]
                try:
                    text = encode_text(value)
                except (CanonicalJsonError, ValueError, TypeError):
                    # Not canonical JSON (what a server puts in ``unsigned`` is not checked): plain JSON.
                    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
                tail.append(f'"{key}":{text}')
        body = self._body_bytes.decode("utf-8")
        return body[:-1] + "," + ",".join(tail) + "}" if tail else body

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    @property
    def state_tuple(self) -> StateKey | None:
        return None if self.state_key is None else (self.type, self.state_key)

    @property
    def redacts(self) -> EventId | None:
        """The event a redaction redacts: top-level before v11, in content since v11."""
        if self.type != "m.room.redaction":
            return None
        # since v11 the property lives in content
        source = self.content if self.room_version.redacts_in_content else self.json
        value = source.get("redacts")
        return EventId(value) if isinstance(value, str) else None

    @property
    def membership(self) -> str | None:
        value = self.content.get("membership")
        return value if isinstance(value, str) else None

    @property
    def origin(self) -> ServerName:
        """The server that created the event: the sender's server."""
        return server_of(self.sender)

    @property
    def unsigned(self) -> dict[str, Any]:
        value = self.json.get("unsigned")
        return value if isinstance(value, dict) else {}

    @property
    def signatures(self) -> dict[str, dict[str, str]]:
        return self.json["signatures"]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<Pdu {self.event_id} {self.type} {self.state_key!r} from {self.sender}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pdu) and other.event_id == self.event_id

    def __hash__(self) -> int:
        return hash(self.event_id)

    # -- checks -----------------------------------------------------------------------------------

    def check_content_hash(self) -> None:
        """Raise HashMismatch if the content hash is wrong (the caller then uses ``redacted()``).

        S2S "Validating hashes and signatures": the received hash is base64-decoded and the bytes compared,
        so a padded or URL-safe spelling of the right digest still matches.
        """
        expected = self.json["hashes"]["sha256"]
        try:
            received = decode_unpadded_base64(expected)
        except Exception as e:  # binascii.Error or ValueError: either way not a hash we can match
            raise HashMismatch(f"content hash of {self.event_id} is not valid base64") from e
        if hashlib.sha256(self._body_bytes).digest() != received:
            raise HashMismatch(f"content hash of {self.event_id} does not match")

    def is_third_party_invite(self) -> bool:
        return (
            self.type == "m.room.member"
            and self.membership == "invite"
            and isinstance(self.content.get("third_party_invite"), dict)
        )

    def required_signers(self) -> set[str]:
        """Servers whose signatures the event must carry (S2S "Validating hashes and signatures").

        - the sender's server, except for an invite made from a third-party invite: "the server which
          actually sends the event may be a different server" (its proof is checked by auth rule 4.4);
        - v1-v2: also the server in the event id, if different;
        - v8+: the authorising server of a restricted join (auth rule 4.2 of v8 needs it "validly signed";
          checking it here drops a forged join before it reaches the DAG).
        """
        if self.type != "m.room.member":  # most events: none of the member rules below applies
            if self.room_version.event_id_format is _DOMAIN:
                return {server_of(self.sender), server_of(self.event_id)}
            return {server_of(self.sender)}
        servers: set[str] = set()
        if not self.is_third_party_invite():
            servers.add(self.origin)
        if self.room_version.event_id_format is _DOMAIN:
            servers.add(server_of(self.event_id))  # v1-v2: the server that minted the event id
        authoriser = self.content.get("join_authorised_via_users_server")
        if (
            self.room_version.restricted_join_rule
            and self.membership == "join"
            and isinstance(authoriser, str)
        ):
            try:
                servers.add(server_of(authoriser))
            except InvalidIdentifier as e:
                raise SignatureError("join_authorised_via_users_server is not a user id") from e
        return servers

    def check_signatures(self, lookup: KeyLookup) -> None:
        """Raise SignatureError unless every required server signed with a key ``lookup`` knows."""
        signers = self.required_signers()
        for server in sorted(signers) if len(signers) > 1 else signers:  # sorted: a stable error message
            self.check_signature_of(server, lookup)

    def check_signature_of(self, server: str, lookup: KeyLookup) -> None:
        """Check ``server``'s signatures (appendix "Checking for a Signature", S2S "Validating ...").

        Signatures by unknown keys are skipped, and so (v5+) are keys that had expired before the event's
        origin_server_ts. Every remaining signature must verify, and at least one must remain.
        """
        # The constructor checked "signatures": an object of objects of strings.
        by_server: dict[str, str] = self.json["signatures"].get(server) or {}
        verified = 0
        skipped: list[str] = []
        for key_id, signature in by_server.items():
            if type(key_id) is not str or not key_id.startswith("ed25519:"):
                continue  # other algorithms are ignored
            info = lookup(server, key_id)
            if info is None:
                skipped.append(f"{key_id} is unknown")
                continue
            if (
                self.room_version.enforce_key_validity  # since v5 (v5-signing-requirements fragment)
                and info.valid_until_ts is not None
                and info.valid_until_ts < self.origin_server_ts
            ):
                skipped.append(f"{key_id} had expired when the event was sent")
                continue
            try:
                verify_signature_bytes(self._redacted_bytes, signature, info.key)
            except SignatureError as e:
                raise SignatureError(f"{server} ({key_id}) on {self.event_id}: {e.message}") from e
            verified += 1
        if not verified:
            if not skipped:  # no ed25519 signature at all
                raise SignatureError(f"{self.event_id} is not signed by {server} with an ed25519 key")
            raise SignatureError(f"no usable signature of {server} on {self.event_id}: {'; '.join(skipped)}")

    def redacted(self) -> Pdu:
        """The redacted copy of this event (same event id), e.g. after a content-hash mismatch."""
        redacted = redact_event(self.json, self.room_version)
        if "unsigned" in self.json:
            redacted["unsigned"] = {
                k: v for k, v in self.json["unsigned"].items() if k in ("age_ts", "redacted_because")
            }
        return Pdu(redacted, self.room_version)

    def with_unsigned(self, unsigned: dict[str, Any]) -> Pdu:
        d = dict(self.json)
        d["unsigned"] = unsigned
        return Pdu(d, self.room_version)

    def to_federation(self) -> dict[str, Any]:
        """The wire form to send to other servers (``unsigned`` is ours to fill per request)."""
        return self.json


def build_event(
    *,
    room_version: RoomVersion,
    room_id: str | None,
    sender: str,
    event_type: str,
    content: dict[str, Any],
    prev_events: Sequence[Pdu] | Sequence[str],
    auth_events: Sequence[Pdu] | Sequence[str],
    depth: int,
    origin_server_ts: int,
    server_name: str,
    signing_key: SigningKey,
    state_key: str | None = None,
    redacts: str | None = None,
    unsigned: dict[str, Any] | None = None,
    extra_signatures: Iterable[tuple[str, SigningKey]] = (),
) -> Pdu:
    """Build, hash and sign a new event of ``room_version`` (S2S "Adding hashes and signatures")."""
    d: dict[str, Any] = {
        "type": event_type,
        "sender": sender,
        "content": content,
        "depth": depth,
        "origin_server_ts": origin_server_ts,
        "prev_events": _refs(prev_events, room_version),
        "auth_events": _refs(auth_events, room_version),
    }
    creating_v12_room = room_version.room_id_from_create_event and event_type == "m.room.create"
    if not creating_v12_room:
        if room_id is None:
            raise ValueError("room_id is required except for a room v12 m.room.create event")
        d["room_id"] = room_id
    if state_key is not None:
        d["state_key"] = state_key
    if not room_version.implicit_room_creator:
        d["origin"] = server_name  # v1-v10 events carry origin (redaction keeps it); dropped in v11
    if redacts is not None:
        if room_version.redacts_in_content:
            # since v11 "redacts" is a content property (pdu_v11 has no top-level one); the client API
            # adds the top-level copy when serving the event (rooms/v11.md).
            d["content"] = {**content, "redacts": redacts}
        else:
            d["redacts"] = redacts
    if room_version.event_id_format is EventIdFormat.DOMAIN:
        d["event_id"] = f"${secrets.token_urlsafe(18)}:{server_name}"
    d["hashes"] = {"sha256": encode_base64(compute_content_hash(d, room_version))}
    redacted = redact_event(d, room_version)
    redacted.pop("signatures", None)
    to_sign = encode_canonical_json(redacted, room_version.strict_canonical_json)
    d["signatures"] = {server_name: {signing_key.key_id: signing_key.sign_bytes(to_sign)}}
    for other_server, other_key in extra_signatures:
        d["signatures"].setdefault(other_server, {})[other_key.key_id] = other_key.sign_bytes(to_sign)
    if unsigned:
        d["unsigned"] = unsigned
    return Pdu(d, room_version)


def add_signature(pdu: Pdu, server_name: str, signing_key: SigningKey) -> Pdu:
    """Co-sign an existing event (e.g. a restricted join or an invite for one of our users)."""
    d = dict(pdu.json)
    d["signatures"] = {k: dict(v) for k, v in d["signatures"].items()}
    d["signatures"].setdefault(server_name, {})[signing_key.key_id] = signing_key.sign_bytes(
        pdu._redacted_bytes
    )
    return Pdu(d, pdu.room_version)


def event_references(events: Sequence[Pdu] | Sequence[str], room_version: RoomVersion) -> list[Any]:
    """``prev_events``/``auth_events`` as the room version's event format writes them: plain event ids
    (v3+), or ``[event_id, {hashes}]`` pairs (v1 and v2, "Event format" of room version 1). Also for the
    unsigned templates of make_join/make_leave, which the remote server completes as they are."""
    return _refs(events, room_version)


def _refs(events: Sequence[Pdu] | Sequence[str], room_version: RoomVersion) -> list[Any]:
    ids = [e.event_id if isinstance(e, Pdu) else e for e in events]
    if room_version.event_id_format is EventIdFormat.DOMAIN:
        out: list[Any] = []
        for e in events:
            if isinstance(e, Pdu):
                out.append([e.event_id, {"sha256": e.json["hashes"]["sha256"]}])
            else:
                out.append([e, {}])
        return out
    return ids
