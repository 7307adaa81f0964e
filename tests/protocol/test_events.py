"""The Pdu type: format checks per room version (pdu_v1 ... pdu_v12), event ids, hashes and signatures."""

from __future__ import annotations

import copy
import hashlib
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ranvier.protocol.canonical_json import encode_canonical_json, encode_unchecked
from ranvier.protocol.errors import (
    CanonicalJsonError,
    EventTooLarge,
    FormatError,
    HashMismatch,
    InvalidIdentifier,
    ProtocolError,
    SignatureError,
    UnsupportedRoomVersion,
)
from ranvier.protocol.events import (
    MAX_AUTH_EVENTS,
    MAX_PDU_BYTES,
    MAX_PREV_EVENTS,
    KeyLookup,
    Pdu,
    VerifyKeyInfo,
    add_signature,
    build_event,
)
from ranvier.protocol.hashes import compute_content_hash, compute_event_id, compute_room_id_from_create
from ranvier.protocol.redaction import redact_event
from ranvier.protocol.room_versions import KNOWN_ROOM_VERSIONS, EventIdFormat, RoomVersion, get_room_version
from ranvier.protocol.signing import SigningKey

KEY = SigningKey.from_seed("a", bytes(32))
OTHER = SigningKey.from_seed("b", bytes(range(32)))
ALL_VERSIONS = list(KNOWN_ROOM_VERSIONS.values())
V1, V3, V4, V5, V6, V8, V10, V11, V12 = (
    get_room_version(v) for v in ("1", "3", "4", "5", "6", "8", "10", "11", "12")
)
TS = 1_700_000_000_000


def keys_of(*servers: tuple[str, SigningKey]) -> KeyLookup:
    """A key lookup answering for exactly the given (server, key) pairs, with no expiry."""
    table = {(server, key.key_id): VerifyKeyInfo(key.verify_key, None) for server, key in servers}
    return lambda server, key_id: table.get((server, key_id))


def room_id_for(version: RoomVersion) -> str:
    return "!" + "A" * 43 if version.room_id_from_create_event else "!room:example.org"


def make(
    version: RoomVersion,
    *,
    event_type: str = "m.room.message",
    content: dict[str, Any] | None = None,
    sender: str = "@alice:example.org",
    server: str = "example.org",
    key: SigningKey = KEY,
    **kwargs: Any,
) -> Pdu:
    args: dict[str, Any] = {
        "room_version": version,
        "room_id": room_id_for(version),
        "sender": sender,
        "event_type": event_type,
        "content": {"msgtype": "m.text", "body": "hello"} if content is None else content,
        "prev_events": [],
        "auth_events": [],
        "depth": 5,
        "origin_server_ts": TS,
        "server_name": server,
        "signing_key": key,
    }
    args.update(kwargs)
    return build_event(**args)


def reparse(pdu: Pdu, change: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> Pdu:
    d = copy.deepcopy(pdu.json)
    d.update(change or {})
    for k in drop:
        d.pop(k, None)
    return Pdu(d, pdu.room_version)


# -- building and round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_build_then_receive_every_version(version: RoomVersion) -> None:
    pdu = make(version)
    received = Pdu(json.loads(json.dumps(pdu.to_federation())), version)
    assert received.event_id == pdu.event_id and received == pdu
    received.check_content_hash()
    received.check_signatures(keys_of(("example.org", KEY)))
    assert received.type == "m.room.message" and received.state_key is None and not received.is_state
    assert received.depth == 5 and received.origin_server_ts == TS and received.sender == "@alice:example.org"


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_event_id_format(version: RoomVersion) -> None:
    event_id = make(version).event_id
    if version.identifier in ("1", "2"):
        assert event_id.startswith("$") and event_id.endswith(":example.org")
        with pytest.raises(ValueError):
            compute_event_id(make(version).json, version)
        return
    # v3+: "$" + the reference hash (43 characters of unpadded base64 of sha256)
    assert event_id == compute_event_id(make(version).json, version)
    assert len(event_id) == 44
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
    if version.identifier == "3":
        alphabet |= set("+/")  # v3: standard base64
    else:
        alphabet |= set("-_")  # v4+: URL-safe base64
    assert set(event_id[1:]) <= alphabet


def test_v3_and_v4_encode_the_same_hash_differently() -> None:
    # Find an event whose hash needs a character that differs between the two alphabets.
    for n in range(200):
        v3_id = make(V3, content={"n": n}).event_id
        if "+" in v3_id or "/" in v3_id:
            v4_json = {k: v for k, v in make(V3, content={"n": n}).json.items()}
            assert compute_event_id(v4_json, V4) == v3_id.replace("+", "-").replace("/", "_")
            return
    pytest.fail("no hash with + or / found")


_content = st.dictionaries(
    st.text(max_size=8),
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    max_size=6,
)


def _reordered(value: Any, rnd: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _reordered(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_reordered(v, rnd) for v in value]
    return value


@settings(max_examples=40)
@given(_content, st.sampled_from(ALL_VERSIONS), st.randoms(use_true_random=False), st.integers(0, 4))
def test_event_id_stable_under_reserialisation(
    content: dict[str, Any], version: RoomVersion, rnd: random.Random, indent: int
) -> None:
    pdu = make(version, content=content)
    wire = json.dumps(_reordered(pdu.json, rnd), indent=indent or None, ensure_ascii=bool(indent % 2))
    again = Pdu(json.loads(wire), version)
    assert again.event_id == pdu.event_id and again.room_id == pdu.room_id
    assert encode_canonical_json(again.json) == encode_canonical_json(pdu.json)
    again.check_content_hash()
    again.check_signatures(keys_of(("example.org", KEY)))


def test_a_stray_event_id_does_not_change_a_v3_event_id() -> None:
    # v3+: "the event_id field is no longer included ... a server should compute the event ID for itself"
    pdu = make(V4)
    assert reparse(pdu, {"event_id": "$forged"}).event_id == pdu.event_id


def test_unsigned_does_not_change_the_event_id_or_checks() -> None:
    pdu = make(V10)
    again = pdu.with_unsigned({"age": 5, "prev_content": {"x": 1}})
    assert again.event_id == pdu.event_id and again.unsigned == {"age": 5, "prev_content": {"x": 1}}
    again.check_content_hash()
    again.check_signatures(keys_of(("example.org", KEY)))


def test_v12_room_id_is_the_create_event_hash() -> None:
    create = make(V12, room_id=None, event_type="m.room.create", state_key="", content={"room_version": "12"})
    assert "room_id" not in create.json
    assert create.room_id == "!" + create.event_id[1:]
    assert create.room_id == compute_room_id_from_create(create.json, V12)
    message = make(V12, room_id=create.room_id, prev_events=[create])  # v12: create not in auth_events
    assert message.room_id == create.room_id and message.prev_event_ids == (create.event_id,)
    with pytest.raises(FormatError):
        reparse(create, {"room_id": create.room_id})  # MSC4291: the create event has no room_id
    with pytest.raises(InvalidIdentifier):
        reparse(message, {"room_id": "!room:example.org"})  # v12 room ids have no domain
    with pytest.raises(ValueError):
        make(V11, room_id=None, event_type="m.room.create", state_key="")


def test_v1_references_carry_hashes() -> None:
    first = make(V1)
    second = make(V1, prev_events=[first], auth_events=[first])
    assert second.json["prev_events"] == [[first.event_id, {"sha256": first.json["hashes"]["sha256"]}]]
    assert second.prev_event_ids == (first.event_id,) and second.auth_event_ids == (first.event_id,)


def test_redacts_location_per_version() -> None:
    old = make(V10, event_type="m.room.redaction", content={}, redacts="$target")
    assert old.json["redacts"] == "$target" and old.redacts == "$target"
    new = make(V11, event_type="m.room.redaction", content={}, redacts="$target")
    assert new.content["redacts"] == "$target" and new.redacts == "$target"
    assert "redacts" not in new.json  # pdu_v11: "v11 is the v6 event, but without redacts"
    assert make(V11).redacts is None


# -- refusals --------------------------------------------------------------------------------------


def _assert_refused(pdu_json: Any, version: RoomVersion, error: type[ProtocolError], errcode: str) -> None:
    with pytest.raises(error) as exc:
        Pdu(pdu_json, version)
    assert exc.value.errcode == errcode


REQUIRED_V1 = ["type", "sender", "content", "depth", "origin_server_ts", "hashes", "signatures", "room_id"]


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_missing_required_keys(version: RoomVersion) -> None:
    pdu = make(version)
    required = [*REQUIRED_V1, "prev_events", "auth_events"]
    if version.identifier in ("1", "2"):
        required.append("event_id")
    for key in required:
        d = copy.deepcopy(pdu.json)
        del d[key]
        _assert_refused(d, version, FormatError, "M_BAD_JSON")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("type", 5),
        ("type", None),
        ("sender", ["@a:b"]),
        ("state_key", 0),
        ("content", "text"),
        ("content", []),
        ("depth", "5"),
        ("depth", True),
        ("depth", -1),
        ("origin_server_ts", "now"),
        ("origin_server_ts", None),
        ("hashes", "abc"),
        ("hashes", {"sha1": "abc"}),
        ("hashes", {"sha256": 5}),
        ("signatures", []),
        ("signatures", {"example.org": "sig"}),
        ("signatures", {"example.org": {"ed25519:a": 5}}),
        ("unsigned", "x"),
        ("prev_events", "$a"),
        ("prev_events", [5]),
        ("prev_events", ["no-sigil"]),
        ("auth_events", {"$a": 1}),
        ("auth_events", ["$" + "a" * 300]),
        ("redacts", 5),
        ("room_id", 5),
    ],
)
def test_wrong_types(key: str, value: Any) -> None:
    pdu = make(V10)
    d = copy.deepcopy(pdu.json)
    d[key] = value
    _assert_refused(d, V10, FormatError, "M_BAD_JSON")


def test_not_an_object() -> None:
    for value in ([], "pdu", None, 5):
        with pytest.raises(FormatError):
            Pdu(value, V10)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sender", "alice"),
        ("sender", "@alice"),
        ("sender", "@alice:bad_host"),
        ("sender", "@" + "a" * 300 + ":example.org"),
        ("room_id", "room:example.org"),
        ("room_id", "!room"),
    ],
)
def test_malformed_identifiers(key: str, value: str) -> None:
    d = copy.deepcopy(make(V10).json)
    d[key] = value
    _assert_refused(d, V10, InvalidIdentifier, "M_INVALID_PARAM")


def test_malformed_v1_event_ids() -> None:
    pdu = make(V1)
    for bad in ("$nodomain", "nosigil:example.org", "$x:bad_host"):
        d = copy.deepcopy(pdu.json)
        d["event_id"] = bad
        _assert_refused(d, V1, InvalidIdentifier, "M_INVALID_PARAM")
    d = copy.deepcopy(pdu.json)
    d["prev_events"] = ["$a:example.org"]  # v1-v2 references are [event_id, hashes] pairs
    _assert_refused(d, V1, FormatError, "M_BAD_JSON")
    d["prev_events"] = [["$a", {}]]
    _assert_refused(d, V1, InvalidIdentifier, "M_INVALID_PARAM")


@pytest.mark.parametrize("key", ["type", "state_key"])
def test_type_and_state_key_at_most_255_bytes(key: str) -> None:
    # CS "Size limits": type and state_key MUST NOT exceed 255 bytes
    ok = make(V10, event_type="x" * 255 if key == "type" else "m.x", state_key="é" * 127)
    assert ok.state_key == "é" * 127
    d = copy.deepcopy(ok.json)
    d[key] = "é" * 128  # 128 code points, 256 bytes
    _assert_refused(d, V10, FormatError, "M_BAD_JSON")


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_too_many_prev_and_auth_events(version: RoomVersion) -> None:
    def ref(i: int) -> Any:
        event_id = f"$e{i}:example.org" if version.identifier in ("1", "2") else f"$e{i}"
        return [event_id, {}] if version.identifier in ("1", "2") else event_id

    ok = make(version)
    d = copy.deepcopy(ok.json)
    d["prev_events"] = [ref(i) for i in range(MAX_PREV_EVENTS)]
    d["auth_events"] = [ref(i) for i in range(MAX_AUTH_EVENTS)]
    assert len(Pdu(d, version).prev_event_ids) == MAX_PREV_EVENTS  # "less than or equal to 20"
    too_many_prev = {**d, "prev_events": [ref(i) for i in range(MAX_PREV_EVENTS + 1)]}
    _assert_refused(too_many_prev, version, FormatError, "M_BAD_JSON")
    too_many_auth = {**d, "auth_events": [ref(i) for i in range(MAX_AUTH_EVENTS + 1)]}
    _assert_refused(too_many_auth, version, FormatError, "M_BAD_JSON")


def _event_of_size(size: int, version: RoomVersion) -> Pdu:
    base = make(version, content={"body": ""})
    padding = size - len(encode_canonical_json(base.json))
    return make(version, content={"body": "x" * padding})


@pytest.mark.parametrize("version", [V1, V4, V12], ids=lambda v: f"v{v.identifier}")
def test_size_limit_is_exact(version: RoomVersion) -> None:
    # CS "Size limits": the complete event, including signatures, as canonical JSON, at most 65536 bytes
    at_limit = _event_of_size(MAX_PDU_BYTES, version)
    assert len(encode_canonical_json(at_limit.json)) == MAX_PDU_BYTES
    over = copy.deepcopy(at_limit.json)
    over["content"]["body"] += "x"
    _assert_refused(over, version, EventTooLarge, "M_TOO_LARGE")
    with pytest.raises(EventTooLarge):
        make(version, content={"body": "é" * 40_000})  # 80,000 bytes of UTF-8


@pytest.mark.parametrize(
    ("value", "strict_error"),
    [(1.5, True), (2**53, True), (-(2**53), True), (float("nan"), None), ("\ud800", None)],
    ids=["float", "big-int", "big-negative-int", "nan", "lone-surrogate"],
)
def test_canonical_json_per_room_version(value: Any, strict_error: bool | None) -> None:
    for version in (V5, V6):
        d = copy.deepcopy(make(version).json)
        d["content"]["x"] = value
        lenient = not version.strict_canonical_json and strict_error
        if lenient:
            Pdu(d, version)  # v1-v5 events may carry floats and big integers (v1-canonical-json)
        else:
            _assert_refused(d, version, CanonicalJsonError, "M_BAD_JSON")


def test_depth_limits() -> None:
    d = copy.deepcopy(make(V5).json)
    d["depth"] = 2**63 - 1  # pdu_v1/v3: below 2^63 - 1 allowed
    assert Pdu(d, V5).depth == 2**63 - 1
    d["depth"] = 2**63
    _assert_refused(d, V5, FormatError, "M_BAD_JSON")
    d6 = copy.deepcopy(make(V6).json)
    d6["depth"] = 2**53  # depth_v6: canonical JSON caps it at 2^53 - 1
    _assert_refused(d6, V6, CanonicalJsonError, "M_BAD_JSON")


def test_unknown_room_version() -> None:
    with pytest.raises(UnsupportedRoomVersion) as exc:
        get_room_version("13")
    assert exc.value.errcode == "M_UNSUPPORTED_ROOM_VERSION"


# -- hashes ----------------------------------------------------------------------------------------


def test_content_hash_mismatch_then_redacted_copy() -> None:
    pdu = make(V10, content={"body": "original"})
    tampered = reparse(pdu, {"content": {"body": "changed"}})
    assert tampered.event_id == pdu.event_id  # body is not part of the redacted form
    tampered.check_signatures(keys_of(("example.org", KEY)))  # "should succeed whether ... redacted"
    with pytest.raises(HashMismatch) as exc:
        tampered.check_content_hash()
    assert exc.value.errcode == "M_FORBIDDEN"
    redacted = tampered.redacted()
    assert redacted.event_id == pdu.event_id and redacted.content == {}
    redacted.check_signatures(keys_of(("example.org", KEY)))


@pytest.mark.parametrize("bad_hash", ["", "not base64!", "AAAA"])
def test_malformed_content_hash(bad_hash: str) -> None:
    pdu = reparse(make(V10), {"hashes": {"sha256": bad_hash}})
    with pytest.raises(HashMismatch):
        pdu.check_content_hash()


def test_padded_content_hash_is_the_same_hash() -> None:
    # S2S: the received hash is base64-decoded and compared, so padding does not matter
    pdu = make(V10)
    padded = reparse(pdu, {"hashes": {"sha256": pdu.json["hashes"]["sha256"] + "="}})
    padded.check_content_hash()


# -- signatures ------------------------------------------------------------------------------------

# Fields of the redacted form, with a different valid value for each.
_SIGNED_CHANGES = {
    "type": "m.room.other",
    "sender": "@mallory:example.org",
    "room_id": "!other:example.org",
    "depth": 6,
    "origin_server_ts": TS + 1,
    "prev_events": ["$other"],
    "auth_events": ["$other"],
    "hashes": {"sha256": "A" * 43},
    "state_key": "",
    "origin": "other.example",
}


@pytest.mark.parametrize("field", sorted(_SIGNED_CHANGES))
def test_changing_a_signed_field_breaks_the_signature(field: str) -> None:
    pdu = make(
        V10, event_type="m.room.member", state_key="@alice:example.org", content={"membership": "join"}
    )
    lookup = keys_of(("example.org", KEY))
    tampered = reparse(pdu, {field: _SIGNED_CHANGES[field]})
    with pytest.raises(SignatureError) as exc:
        tampered.check_signatures(lookup)
    assert exc.value.errcode == "M_FORBIDDEN"
    for content in ({"membership": "leave"}, {}):  # membership is kept by redaction
        with pytest.raises(SignatureError):
            reparse(pdu, {"content": content}).check_signatures(lookup)


def test_unknown_keys_are_skipped_but_one_known_signature_is_needed() -> None:
    pdu = add_signature(make(V10), "example.org", OTHER)  # signed with two keys now
    pdu.check_signatures(keys_of(("example.org", KEY)))  # OTHER unknown: skipped
    pdu.check_signatures(keys_of(("example.org", OTHER)))
    with pytest.raises(SignatureError):
        pdu.check_signatures(keys_of())  # no known key at all


def test_every_known_signature_must_verify() -> None:
    pdu = add_signature(make(V10), "example.org", OTHER)
    d = copy.deepcopy(pdu.json)
    d["signatures"]["example.org"][OTHER.key_id] = d["signatures"]["example.org"][KEY.key_id]  # wrong sig
    broken = Pdu(d, V10)
    broken.check_signatures(keys_of(("example.org", KEY)))  # the bad one is by an unknown key
    with pytest.raises(SignatureError):
        broken.check_signatures(keys_of(("example.org", KEY), ("example.org", OTHER)))


def test_expired_keys_from_v5() -> None:
    def expired_at(ts: int) -> KeyLookup:
        return lambda server, key_id: VerifyKeyInfo(KEY.verify_key, ts) if key_id == KEY.key_id else None

    for version in (V4, V5):
        pdu = make(version)
        pdu.check_signatures(expired_at(TS))  # valid_until_ts == origin_server_ts is still valid
        if version.enforce_key_validity:
            with pytest.raises(SignatureError):
                pdu.check_signatures(expired_at(TS - 1))
        else:
            pdu.check_signatures(expired_at(TS - 1))  # v1-v4 do not enforce key validity


def test_v1_requires_the_event_id_server_too() -> None:
    # v1-v2: "a signature is present from the domain in the event_id, if it differs from the originating
    # server" (S2S "Validating hashes and signatures on received events")
    minted_elsewhere = make(V1, sender="@alice:example.org", server="other.example", key=OTHER)
    assert minted_elsewhere.event_id.endswith(":other.example")
    assert minted_elsewhere.required_signers() == {"example.org", "other.example"}
    lookup = keys_of(("example.org", KEY), ("other.example", OTHER))
    with pytest.raises(SignatureError):
        minted_elsewhere.check_signatures(lookup)
    add_signature(minted_elsewhere, "example.org", KEY).check_signatures(lookup)


def test_restricted_join_needs_the_authorising_server_from_v8() -> None:
    content = {"membership": "join", "join_authorised_via_users_server": "@admin:resident.example"}
    lookup = keys_of(("example.org", KEY), ("resident.example", OTHER))
    join = make(V8, event_type="m.room.member", state_key="@alice:example.org", content=content)
    assert join.required_signers() == {"example.org", "resident.example"}
    with pytest.raises(SignatureError):
        join.check_signatures(lookup)
    add_signature(join, "resident.example", OTHER).check_signatures(lookup)
    # before v8 the key means nothing
    old = make(V6, event_type="m.room.member", state_key="@alice:example.org", content=content)
    assert old.required_signers() == {"example.org"}


def test_third_party_invite_need_not_be_signed_by_the_sender_server() -> None:
    # S2S: "If the event is a 3rd party invite ... the server which actually sends the event may be a
    # different server."
    content = {"membership": "invite", "third_party_invite": {"display_name": "b", "signed": {"token": "t"}}}
    invite = make(
        V10,
        event_type="m.room.member",
        state_key="@bob:bob.example",
        content=content,
        sender="@alice:alice.example",
        server="bob.example",
        key=OTHER,
    )
    assert invite.required_signers() == set()
    invite.check_signatures(keys_of(("bob.example", OTHER)))
    plain_invite = make(
        V10,
        event_type="m.room.member",
        state_key="@bob:bob.example",
        content={"membership": "invite"},
        sender="@alice:alice.example",
        server="bob.example",
        key=OTHER,
    )
    with pytest.raises(SignatureError):
        plain_invite.check_signatures(keys_of(("bob.example", OTHER)))


# -- the assembled encodings equal the straightforward ones ------------------------------------------

_extra_top = st.dictionaries(
    st.sampled_from(["origin", "membership", "prev_state", "redacts", "org.example", "a", "zzz", "é"]),
    st.text(max_size=5) | st.integers(0, 10) | st.lists(st.integers(0, 3), max_size=2),
    max_size=4,
)
_types = st.sampled_from(["m.room.message", "m.room.member", "m.room.create", "m.room.power_levels", "x"])


@settings(max_examples=80)
@given(_content, _extra_top, _types, st.sampled_from(ALL_VERSIONS))
def test_signed_and_hashed_bytes_are_the_spec_encodings(
    content: dict[str, Any], extra: dict[str, Any], event_type: str, version: RoomVersion
) -> None:
    """Pdu assembles canonical JSON from per-member pieces; it must equal encoding the whole objects."""
    base = make(version, content=content, event_type=event_type, state_key="")
    d = {**copy.deepcopy(base.json), **extra, "unsigned": {"age": 1}}
    if version.identifier in ("1", "2") or ("redacts" in extra and not isinstance(extra["redacts"], str)):
        d.pop("redacts", None)
    pdu = Pdu(d, version)
    redacted = redact_event(pdu.json, version)
    del redacted["signatures"]
    assert pdu._redacted_bytes == encode_canonical_json(redacted, strict=False)
    body = {k: v for k, v in pdu.json.items() if k not in ("unsigned", "signatures", "hashes")}
    assert pdu._body_bytes == encode_canonical_json(body, strict=False)
    if version.identifier not in ("1", "2"):
        assert pdu.event_id == compute_event_id(pdu.json, version)


@pytest.mark.parametrize(
    "change",
    [
        {"hashes": {"sha256": "A" * 43, "other": 1.5}},
        {"unsigned": {"age": 1.5}},
        {"org.example.extra": [2**53]},
        {"depth": 2**53},
        {"origin_server_ts": -(2**53)},
        {"content": {"nested": [{"deeper": float("inf")}]}},
    ],
    ids=repr,
)
def test_strict_canonical_json_reaches_every_member(change: dict[str, Any]) -> None:
    for version in (V6, V12):
        changed = {**copy.deepcopy(make(version).json), **change}
        _assert_refused(changed, version, CanonicalJsonError, "M_BAD_JSON")


def test_top_level_keys_must_be_strings() -> None:
    _assert_refused({**copy.deepcopy(make(V10).json), 1: "x"}, V10, CanonicalJsonError, "M_BAD_JSON")


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize(
    ("version", "extra"),
    [
        (V1, {"f": 1.5, "big": 2**60}),  # v1-v5 may carry floats and big integers: orjson never sees them
        (V3, {"f": -0.25, "big": -(2**64)}),
        (V5, {"f": 1e300}),
        (V6, {"deep": _nested(300)}),  # deeper than orjson encodes: the json module does
        (V12, {"deep": _nested(300)}),
    ],
    ids=["v1-float", "v3-big-int", "v5-exponent", "v6-deep", "v12-deep"],
)
def test_events_orjson_does_not_encode_take_the_json_module_path(version: RoomVersion, extra: Any) -> None:
    """Pdu encodes what orjson cannot (or must not) encode with the json module, to the same bytes as the
    plain spec computations; the event's hash, signature and event id check out."""
    built = make(version, content={"body": "x", **extra})
    received = Pdu(json.loads(json.dumps(built.json)), version)
    received.check_content_hash()
    received.check_signatures(keys_of(("example.org", KEY)))
    body = {k: v for k, v in received.json.items() if k not in ("unsigned", "signatures", "hashes")}
    assert received._body_bytes == encode_unchecked(body)
    redacted = redact_event(received.json, version)
    del redacted["signatures"]
    assert received._redacted_bytes == encode_unchecked(redacted)
    if version.event_id_format is not EventIdFormat.DOMAIN:
        assert received.event_id == compute_event_id(received.json, version)


# -- the receiving fast path equals the plain one ----------------------------------------------------

_any_type = st.sampled_from(
    [
        "m.room.message",
        "m.room.member",
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.aliases",
        "m.room.redaction",
    ]
) | st.text(max_size=8)
# Content with the keys some redaction rule keeps, and others.
_kept_keys = st.sampled_from(
    [
        *("membership", "join_rule", "allow", "creator", "users", "ban", "history_visibility", "aliases"),
        *("redacts", "join_authorised_via_users_server", "invite", "third_party_invite", "events"),
    ]
)
_redactable_content = st.dictionaries(
    _kept_keys | st.text(max_size=8),
    st.none() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20) | _content,
    max_size=6,
)
# Event ids that need escaping in JSON (quotes, backslashes, control characters, non-ASCII).
_odd_ids = st.lists(st.text(max_size=6).map(lambda s: "$" + s), max_size=3)


@settings(max_examples=150)
@given(_redactable_content, _any_type, _odd_ids, _odd_ids, st.sampled_from(ALL_VERSIONS), st.booleans())
def test_receiving_fast_path_equals_the_plain_path(
    content: dict[str, Any],
    event_type: str,
    prevs: list[str],
    auths: list[str],
    version: RoomVersion,
    state: bool,
) -> None:
    """What ``Pdu(...)`` computes once from per-member pieces (the event id, the content hash's input,
    the signed bytes, the redacted content, the size) equals the straightforward spec computations
    (``compute_event_id``, ``compute_content_hash``, ``encode_canonical_json`` of ``redact_event``), and
    an event signed the plain way verifies the fast way."""
    if version.event_id_format is EventIdFormat.DOMAIN:
        prevs, auths = [f"$p{i}:example.org" for i in range(len(prevs))], []
    # v12: a create event has no room id, so it must be the state event that derives one.
    state = state or (event_type == "m.room.create" and version.room_id_from_create_event)
    built = make(
        version,
        content=content,
        event_type=event_type,
        prev_events=prevs,
        auth_events=auths,
        **({"state_key": ""} if state else {}),
    )
    wire = json.loads(json.dumps(built.json))  # what a receiver parses: no shared objects
    received = Pdu(wire, version)
    received.check_content_hash()
    received.check_signatures(keys_of(("example.org", KEY)))
    plain = {k: v for k, v in wire.items() if k != "unsigned"}
    strict = version.strict_canonical_json
    assert hashlib.sha256(received._body_bytes).digest() == compute_content_hash(plain, version)
    redacted = redact_event(plain, version)
    del redacted["signatures"]
    assert received._redacted_bytes == encode_canonical_json(redacted, strict)
    assert received.redacted().json["content"] == redact_event(plain, version)["content"]
    if version.event_id_format is not EventIdFormat.DOMAIN:
        assert received.event_id == compute_event_id(plain, version)
    # The size limit counts the whole event without "unsigned": one byte over it is refused.
    size = len(encode_canonical_json(plain, strict))
    padding = MAX_PDU_BYTES - size + 1
    over = {**copy.deepcopy(wire), "org.example.pad": "x" * max(padding - len(',"org.example.pad":""'), 0)}
    if padding > len(',"org.example.pad":""'):
        with pytest.raises(EventTooLarge):
            Pdu(over, version)
        over["org.example.pad"] = over["org.example.pad"][1:]
        Pdu(over, version)  # exactly at the limit


@settings(max_examples=100)
@given(_redactable_content, st.sampled_from(ALL_VERSIONS), st.booleans())
def test_the_stored_text_is_the_whole_event(
    content: dict[str, Any], version: RoomVersion, unsigned: bool
) -> None:
    """``json_text`` (what storage keeps, built from the bytes encoded at parsing) parses back to the whole
    event as received, ``unsigned`` included."""
    prevs = ["$p0:example.org"] if version.event_id_format is EventIdFormat.DOMAIN else []
    built = make(version, content=content, prev_events=prevs)
    wire = json.loads(json.dumps(built.json))
    if unsigned:
        wire["unsigned"] = {"age": 12, "transaction_id": "m1.ü", "nested": {"b": [1, None], "a": True}}
    received = Pdu(wire, version)
    assert json.loads(received.json_text()) == received.json
