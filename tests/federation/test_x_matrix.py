from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ranvier.federation.x_matrix import (
    RequestAuthError,
    XMatrixAuth,
    format_x_matrix,
    parse_x_matrix,
    request_json,
    sign_encoded_request,
    sign_request,
    signed_request_bytes,
    verify_request,
)
from ranvier.protocol.canonical_json import encode_canonical_json
from ranvier.protocol.events import VerifyKeyInfo
from ranvier.protocol.signing import SigningKey

KEY = SigningKey.generate("k1")
NOW = 1_700_000_000_000


def lookup_for(server: str, key: SigningKey, valid_until: int | None = None):
    def lookup(s: str, key_id: str) -> VerifyKeyInfo | None:
        if s == server and key_id == key.key_id:
            return VerifyKeyInfo(key.verify_key, valid_until)
        return None

    return lookup


def test_parse_spec_example() -> None:
    auth = parse_x_matrix(
        'X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",'
        'key="ed25519:key1",sig="ABCDEF..."'
    )
    assert auth == XMatrixAuth(
        "origin.hs.example.com", "destination.hs.example.com", "ed25519:key1", "ABCDEF..."
    )


def test_parse_is_lenient_where_the_spec_says() -> None:
    # Several spaces after the scheme, mixed-case names and scheme, any order, whitespace around commas,
    # unquoted values with colons, escapes in quoted values, unknown parameters.
    header = (
        'x-matrix   Key=ed25519:k1 ,\tSIG="a\\"b" , origin=example.org:8448,extra="1",destination=dest.org'
    )
    auth = parse_x_matrix(header)
    assert auth == XMatrixAuth("example.org:8448", "dest.org", "ed25519:k1", 'a"b')


def test_destination_is_optional_on_receipt() -> None:
    assert parse_x_matrix('X-Matrix origin=a.org,key="ed25519:1",sig="s"').destination is None


@pytest.mark.parametrize(
    "header",
    [
        'Bearer origin="a.org",key="ed25519:1",sig="s"',
        'X-Matrix origin="a.org",key="ed25519:1"',  # no sig
        'X-Matrix origin="a.org",origin="b.org",key="ed25519:1",sig="s"',  # duplicate
        'X-Matrix origin="a.org,key="ed25519:1",sig="s"',  # unterminated quote swallows the rest
        'X-Matrix origin="a.org" key="ed25519:1",sig="s"',  # missing comma
        'X-Matrix origin="not a server",key="ed25519:1",sig="s"',
        "X-Matrix",
    ],
)
def test_parse_rejects(header: str) -> None:
    with pytest.raises(RequestAuthError) as e:
        parse_x_matrix(header)
    assert e.value.errcode == "M_UNAUTHORIZED"


server_names = st.from_regex(r"\A[a-z0-9]{1,10}(\.[a-z]{2,5})?(:[1-9][0-9]{0,3})?\Z")
opaque = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@given(server_names, server_names, opaque, opaque)
def test_format_parse_round_trip(origin: str, destination: str, key: str, sig: str) -> None:
    auth = XMatrixAuth(origin, destination, key, sig)
    assert parse_x_matrix(format_x_matrix(auth)) == auth


def test_sender_uses_the_conservative_form() -> None:
    header = sign_request("GET", "/_matrix/federation/v1/version", "a.org", "b.org", None, KEY)
    assert header.startswith('X-Matrix origin="a.org",destination="b.org",key="ed25519:k1",sig="')
    assert " ," not in header and ", " not in header


def _verify(
    header: str, *, method="PUT", uri="/_matrix/federation/v1/send/1", content=None, us="b.org", **kw
):
    return verify_request(
        parse_x_matrix(header),
        method=method,
        uri=uri,
        content=content,
        our_server_name=us,
        lookup=kw.get("lookup", lookup_for("a.org", KEY)),
        now_ms=NOW,
        raw_content=kw.get("raw_content"),
    )


def test_sign_then_verify() -> None:
    content = {"pdus": [], "edus": [{"edu_type": "m.typing"}]}
    header = sign_request("PUT", "/_matrix/federation/v1/send/1", "a.org", "b.org", content, KEY)
    assert _verify(header, content=content) == "a.org"


@pytest.mark.parametrize(
    "change",
    [
        {"content": {"pdus": ["x"]}},
        {"method": "POST"},
        {"uri": "/_matrix/federation/v1/send/2"},
        {"us": "c.org"},  # addressed to someone else: the spec's 401
        {"lookup": lookup_for("a.org", SigningKey.generate("k1"))},  # same key id, other key: forged
        {"lookup": lookup_for("other.org", KEY)},  # unknown key
        {"lookup": lookup_for("a.org", KEY, valid_until=NOW - 1)},  # expired (e.g. an old_verify_key)
    ],
)
def test_verify_rejects(change: dict) -> None:
    content = {"pdus": []}
    header = sign_request("PUT", "/_matrix/federation/v1/send/1", "a.org", "b.org", content, KEY)
    kwargs = {"content": content, **change}
    with pytest.raises(RequestAuthError):
        _verify(header, **kwargs)


def test_missing_destination_means_us() -> None:
    # Older servers omit destination; the signed JSON then names us as destination.
    header = sign_request("GET", "/x?a=1", "a.org", "b.org", None, KEY)
    auth = parse_x_matrix(header)
    legacy = format_x_matrix(XMatrixAuth(auth.origin, None, auth.key, auth.sig))
    assert _verify(legacy, method="GET", uri="/x?a=1") == "a.org"
    with pytest.raises(RequestAuthError):
        _verify(legacy, method="GET", uri="/x?a=1", us="c.org")


# -- the received body's own bytes are checked first when they are canonical JSON ----------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=6), _json_values, max_size=4), st.text(max_size=10))
def test_spliced_bytes_are_the_canonical_encoding(content: dict, uri_tail: str) -> None:
    uri = "/_matrix/federation/v1/send/" + uri_tail
    raw = encode_canonical_json(content, strict=False)
    expected = encode_canonical_json(request_json("PUT", uri, "a.org", "b.org", content), strict=False)
    assert signed_request_bytes("PUT", uri, "a.org", "b.org", raw) == expected
    assert signed_request_bytes("GET", uri, "a.org", "b.org", None) == encode_canonical_json(
        request_json("GET", uri, "a.org", "b.org", None)
    )


def test_a_body_verifies_whether_sent_canonical_or_not() -> None:
    content = {"pdus": [], "edus": [{"edu_type": "m.typing", "content": {"é": "ü"}}]}
    header = sign_request("PUT", "/_matrix/federation/v1/send/1", "a.org", "b.org", content, KEY)
    canonical = encode_canonical_json(content)
    assert _verify(header, content=content, raw_content=canonical) == "a.org"
    # That path checks the received bytes themselves: what they parsed to is not encoded again.
    assert _verify(header, content={"not": "encoded"}, raw_content=canonical) == "a.org"
    # Pretty-printed, keys unsorted, non-ASCII escaped: the canonical encoding of what it parsed to.
    pretty = json.dumps({"pdus": [], "edus": content["edus"]}, indent=2).encode()
    assert json.loads(pretty) == content
    assert _verify(header, content=content, raw_content=pretty) == "a.org"


def test_a_body_signed_for_other_content_fails_either_way() -> None:
    signed = {"pdus": []}
    header = sign_request("PUT", "/_matrix/federation/v1/send/1", "a.org", "b.org", signed, KEY)
    sent = {"pdus": ["x"]}
    for raw in (encode_canonical_json(sent), json.dumps(sent, indent=1).encode()):
        with pytest.raises(RequestAuthError):
            _verify(header, content=sent, raw_content=raw)
    # The signed bytes spliced into another request (other uri) do not verify either.
    with pytest.raises(RequestAuthError):
        _verify(header, content=signed, raw_content=encode_canonical_json(signed), uri="/_matrix/x")


def test_signing_the_encoded_body_is_signing_the_object() -> None:
    content = {"pdus": [{"content": {"body": "é\n"}, "depth": 2**40}], "edus": []}
    for body in (content, None):
        encoded = None if body is None else encode_canonical_json(body)
        args = ("PUT", "/_matrix/federation/v1/send/1", "a.org", "b.org")
        assert sign_encoded_request(*args, encoded, KEY) == sign_request(*args, body, KEY)
