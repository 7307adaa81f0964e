"""Identifier grammar (appendix "Identifier Grammar") and the room-version table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ranvier.protocol.errors import InvalidIdentifier, UnsupportedRoomVersion
from ranvier.protocol.identifiers import (
    is_valid_localpart,
    is_valid_server_name,
    parse_event_id,
    parse_room_alias,
    parse_room_id,
    parse_server_name,
    parse_user_id,
    server_of,
)
from ranvier.protocol.room_versions import (
    DEFAULT_ROOM_VERSION,
    KNOWN_ROOM_VERSIONS,
    EventIdFormat,
    RedactionRules,
    StateResAlgorithm,
    get_room_version,
)

# The appendix's own examples of valid server names.
VALID_SERVER_NAMES = [
    "matrix.org",
    "matrix.org:8888",
    "1.2.3.4",
    "1.2.3.4:1234",
    "[1234:5678::abcd]",
    "[1234:5678::abcd]:5678",
    "localhost",
    "a-b.example",
    "MATRIX.ORG",  # discouraged but valid; case-sensitive
]
INVALID_SERVER_NAMES = [
    "",
    "matrix.org:",
    "matrix.org:0",
    "matrix.org:65536",
    "matrix.org:123456",
    "matrix.org:80x",
    "matrix_org",
    "mat rix.org",
    "matrix.org\n",  # a regex "$" would let this through
    "matrix.org:\uff18\uff10",  # full-width digits: not DIGIT
    "[1234:5678::abcd",
    "[not:an:ip:::::]",  # IPv6 literals must be RFC 3513 addresses
    "[::1::2]",
    "x" * 256,
    "exämple.org",
]


@pytest.mark.parametrize("name", VALID_SERVER_NAMES)
def test_valid_server_names(name: str) -> None:
    assert is_valid_server_name(name)
    assert parse_server_name(name) == name


@pytest.mark.parametrize("name", INVALID_SERVER_NAMES)
def test_invalid_server_names(name: str) -> None:
    assert not is_valid_server_name(name)
    with pytest.raises(InvalidIdentifier) as exc:
        parse_server_name(name)
    assert exc.value.errcode == "M_INVALID_PARAM"


@pytest.mark.parametrize(
    "user_id",
    [
        "@alice:example.org",
        "@a.b_c=d-e/f+g:example.org:8448",
        "@0:[::1]",
        # historical user ids: any non-surrogate code point but ":" and NUL, even empty (appendix)
        "@Alice:example.org",
        "@:example.org",
        "@日本:example.org",
        "@tab\there:example.org",
    ],
)
def test_user_ids_accepted_over_federation(user_id: str) -> None:
    assert parse_user_id(user_id) == user_id
    assert server_of(user_id) == user_id.split(":", 1)[1]


@pytest.mark.parametrize(
    "user_id",
    [
        "alice:example.org",
        "@alice",
        "@alice:",
        "@alice:bad_server",
        "@al\x00ice:example.org",
        "@al\ud800ice:example.org",  # lone surrogate
        "@" + "a" * 250 + ":example.org",  # > 255 bytes
        "@" + "é" * 125 + ":example.org",  # 138 code points but 263 bytes
        "#alice:example.org",
        None,
        42,
    ],
    ids=lambda v: repr(v)[:30],
)
def test_malformed_user_ids(user_id: object) -> None:
    with pytest.raises(InvalidIdentifier) as exc:
        parse_user_id(user_id)
    assert exc.value.errcode == "M_INVALID_PARAM"


@pytest.mark.parametrize("user_id", ["@Alice:example.org", "@:example.org", "@a b:example.org", "@a\n:x.org"])
def test_strict_grammar_for_ids_we_create(user_id: str) -> None:
    parse_user_id(user_id)
    with pytest.raises(InvalidIdentifier):
        parse_user_id(user_id, strict=True)


def test_strict_localpart_grammar() -> None:
    assert is_valid_localpart("a.b_c=d-e/f+g0")
    for bad in ("", "A", "a b", "a:b", "alice\n", "ä"):
        assert not is_valid_localpart(bad), bad


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._=-/+", min_size=1, max_size=40))
def test_every_strict_localpart_makes_a_valid_user_id(localpart: str) -> None:
    assert parse_user_id(f"@{localpart}:example.org", strict=True)


@given(st.text(st.characters(exclude_categories=("Cs",), exclude_characters=":\x00"), max_size=60))
def test_every_historical_localpart_is_accepted(localpart: str) -> None:
    # appendix "Historical User IDs": servers MUST accept these (within 255 bytes)
    user_id = f"@{localpart}:example.org"
    if len(user_id.encode("utf-8")) <= 255:
        assert parse_user_id(user_id) == user_id


def test_room_ids_with_domain() -> None:
    assert parse_room_id("!abc:example.org") == "!abc:example.org"
    for bad in ("!abc", "abc:example.org", "!abc:", "!a\x00:x.org", "!" + "a" * 260 + ":x.org", None):
        with pytest.raises(InvalidIdentifier):
            parse_room_id(bad)


def test_room_ids_as_hashes_room_v12() -> None:
    # appendix "Room IDs": the create event's event id with "!" for "$" (URL-safe base64 sha256)
    room_id = "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"  # the pdu_v12 schema's example
    assert parse_room_id(room_id, domainless=True) == room_id
    for bad in (
        "!abc:example.org",
        "!",
        "!short",
        "!Nhcu5BS+UMnFX7hBVfVSoXiD7OgH6iRT/xyIuqDnpYQ",  # standard, not URL-safe, base64
        room_id + "A",
        room_id + "\n",
        "$Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ",
    ):
        with pytest.raises(InvalidIdentifier):
            parse_room_id(bad, domainless=True)


def test_room_aliases() -> None:
    assert parse_room_alias("#room:example.org") == "#room:example.org"
    for bad in ("#room", "room:example.org", "!room:example.org", "#ro\x00om:x.org"):
        with pytest.raises(InvalidIdentifier):
            parse_room_alias(bad)


def test_event_ids() -> None:
    assert parse_event_id("$abc:example.org", with_domain=True)
    assert parse_event_id("$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg")
    for bad in ("abc", "$", "", "$" + "a" * 255, None):
        with pytest.raises(InvalidIdentifier):
            parse_event_id(bad)
    with pytest.raises(InvalidIdentifier):
        parse_event_id("$abc", with_domain=True)


def test_server_of() -> None:
    assert server_of("@a:example.org:8448") == "example.org:8448"
    assert server_of("$e:[::1]:80") == "[::1]:80"
    with pytest.raises(InvalidIdentifier):
        server_of("$hashonly")


# -- room versions ---------------------------------------------------------------------------------


def test_all_stable_versions_known_and_default_is_12() -> None:
    assert list(KNOWN_ROOM_VERSIONS) == [str(n) for n in range(1, 13)]
    assert DEFAULT_ROOM_VERSION == "12"


@pytest.mark.parametrize("identifier", ["13", "0", "1.2-beta", "org.example.v1", "", " 1", "01"])
def test_unknown_room_versions(identifier: str) -> None:
    with pytest.raises(UnsupportedRoomVersion) as exc:
        get_room_version(identifier)
    assert exc.value.errcode == "M_UNSUPPORTED_ROOM_VERSION"


@pytest.mark.parametrize("identifier", [1, 12, None, b"1"])
def test_room_version_must_be_a_string(identifier: object) -> None:
    with pytest.raises(UnsupportedRoomVersion):
        get_room_version(identifier)


def _versions_with(flag: str) -> list[int]:
    return [int(v.identifier) for v in KNOWN_ROOM_VERSIONS.values() if getattr(v, flag)]


def test_feature_matrix() -> None:
    """rooms/_index.md "Feature matrix" and the per-version pages, as data."""
    assert _versions_with("knock_join_rule") == list(range(7, 13))
    assert _versions_with("restricted_join_rule") == list(range(8, 13))
    assert _versions_with("knock_restricted_join_rule") == list(range(10, 13))
    assert _versions_with("privileged_creators") == [12]
    assert _versions_with("room_id_from_create_event") == [12]
    assert _versions_with("strict_canonical_json") == list(range(6, 13))
    assert _versions_with("enforce_key_validity") == list(range(5, 13))
    assert _versions_with("special_case_aliases_auth") == list(range(1, 6))
    assert _versions_with("limit_notifications_power_levels") == list(range(6, 13))
    assert _versions_with("integer_power_levels") == list(range(10, 13))
    assert _versions_with("implicit_room_creator") == [11, 12]
    assert _versions_with("redacts_in_content") == [11, 12]
    assert _versions_with("deferred_redaction_check") == list(range(3, 13))
    fmt = {int(v.identifier): v.event_id_format for v in KNOWN_ROOM_VERSIONS.values()}
    assert [n for n, f in fmt.items() if f is EventIdFormat.DOMAIN] == [1, 2]
    assert [n for n, f in fmt.items() if f is EventIdFormat.BASE64] == [3]
    state_res = {int(v.identifier): v.state_res for v in KNOWN_ROOM_VERSIONS.values()}
    assert state_res[1] is StateResAlgorithm.V1
    assert all(state_res[n] is StateResAlgorithm.V2 for n in range(2, 12))
    assert state_res[12] is StateResAlgorithm.V2_1
    redaction = {int(v.identifier): v.redaction for v in KNOWN_ROOM_VERSIONS.values()}
    assert redaction == {
        **dict.fromkeys(range(1, 6), RedactionRules.V1),
        6: RedactionRules.V6,
        7: RedactionRules.V6,
        8: RedactionRules.V8,
        9: RedactionRules.V9,
        10: RedactionRules.V9,
        11: RedactionRules.V11,
        12: RedactionRules.V11,
    }
