"""Signing JSON (appendix "Signing Details", "Checking for a Signature"): properties and refusals."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import signedjson.key
import signedjson.sign
import unpaddedbase64
from hypothesis import given, settings
from hypothesis import strategies as st

from ranvier.protocol.canonical_json import MAX_SAFE_INT, MIN_SAFE_INT
from ranvier.protocol.errors import SignatureError
from ranvier.protocol.signing import (
    SigningKey,
    decode_unpadded_base64,
    decode_verify_key,
    sign_json,
    signature_key_ids,
    verify_json_signature,
)

KEY = SigningKey.from_seed("k1", bytes(range(32)))
OTHER_KEY = SigningKey.from_seed("k2", bytes(range(1, 33)))
SERVER = "example.org"
# The same key as signedjson (the reference implementation Synapse uses) sees it: an independent oracle.
THEIR_KEY = signedjson.key.decode_signing_key_base64("ed25519", "k1", KEY.to_file_line().split()[2])

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=MIN_SAFE_INT, max_value=MAX_SAFE_INT) | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=20,
)
# Objects to sign: anything but the two keys that signing leaves out.
signable_objects = st.dictionaries(
    _text.filter(lambda k: k not in ("signatures", "unsigned")), _values, max_size=6
)


@given(signable_objects)
def test_sign_then_verify(obj: dict[str, Any]) -> None:
    signed = sign_json(copy.deepcopy(obj), SERVER, KEY)
    verify_json_signature(signed, SERVER, KEY.key_id, KEY.verify_key)
    # the reference implementation agrees both ways
    signedjson.sign.verify_signed_json(signed, SERVER, signedjson.key.get_verify_key(THEIR_KEY))
    theirs = signedjson.sign.sign_json(copy.deepcopy(obj), SERVER, THEIR_KEY)
    assert theirs["signatures"] == signed["signatures"]


def _mutations(value: Any) -> list[Any]:
    """Values that differ from ``value`` as JSON."""
    if isinstance(value, bool) or value is None:
        return [0, "x", not value] if isinstance(value, bool) else [False, 0, ""]
    if isinstance(value, int):
        return [value + 1 if value < MAX_SAFE_INT else value - 1, str(value)]
    if isinstance(value, str):
        return [value + "x", None]
    if isinstance(value, list):
        return [[*value, None], value[:-1] if value else [0]]
    return [{**value, _fresh_key(value): 1}, None]


def _fresh_key(obj: dict[str, Any]) -> str:
    return "k" * (max((len(k) for k in obj), default=0) + 1)


@settings(max_examples=60)
@given(signable_objects.filter(bool), st.data())
def test_changing_any_signed_field_breaks_verification(obj: dict[str, Any], data: st.DataObject) -> None:
    signed = sign_json(copy.deepcopy(obj), SERVER, KEY)
    key = data.draw(st.sampled_from(sorted(obj)))
    for replacement in _mutations(obj[key]):
        tampered = copy.deepcopy(signed)
        tampered[key] = replacement
        with pytest.raises(SignatureError):
            verify_json_signature(tampered, SERVER, KEY.key_id, KEY.verify_key)
    removed = copy.deepcopy(signed)
    del removed[key]
    with pytest.raises(SignatureError):
        verify_json_signature(removed, SERVER, KEY.key_id, KEY.verify_key)
    added = copy.deepcopy(signed)
    added[_fresh_key(signed)] = 1
    with pytest.raises(SignatureError):
        verify_json_signature(added, SERVER, KEY.key_id, KEY.verify_key)


@given(signable_objects, _values)
def test_unsigned_and_other_signatures_are_not_covered(obj: dict[str, Any], extra: Any) -> None:
    signed = sign_json(copy.deepcopy(obj), SERVER, KEY)
    signed["unsigned"] = {"age_ts": 1, "x": extra}
    sign_json(signed, "other.example", OTHER_KEY)  # a second signer keeps the first signature valid
    verify_json_signature(signed, SERVER, KEY.key_id, KEY.verify_key)
    verify_json_signature(signed, "other.example", OTHER_KEY.key_id, OTHER_KEY.verify_key)
    assert signed["unsigned"]["x"] == extra


def test_wrong_key_fails() -> None:
    signed = sign_json({"a": 1}, SERVER, KEY)
    with pytest.raises(SignatureError) as exc:
        verify_json_signature(signed, SERVER, KEY.key_id, OTHER_KEY.verify_key)
    assert exc.value.errcode == "M_FORBIDDEN"


@pytest.mark.parametrize(
    ("signatures", "why"),
    [
        (None, "no signatures object"),
        ({}, "server missing"),
        ({SERVER: "not an object"}, "server entry not an object"),
        ({SERVER: {}}, "key id missing"),
        ({SERVER: {KEY.key_id: 42}}, "signature not a string"),
        ({SERVER: {KEY.key_id: "!!!not base64!!!"}}, "bad base64"),
        ({SERVER: {KEY.key_id: "AAAA"}}, "wrong length"),
        ({SERVER: {KEY.key_id: "A" * 86}}, "right length, wrong bytes"),
    ],
)
def test_malformed_signatures_fail(signatures: Any, why: str) -> None:
    obj: dict[str, Any] = {"a": 1}
    if signatures is not None:
        obj["signatures"] = signatures
    with pytest.raises(SignatureError):
        verify_json_signature(obj, SERVER, KEY.key_id, KEY.verify_key)


def test_signature_key_ids_skip_unknown_algorithms() -> None:
    # "Removes any signing key identifiers from the entry with algorithms it doesn't understand."
    obj = {"signatures": {SERVER: {"ed25519:a": "x", "curve25519:b": "y", "ed25519:c": "z"}}}
    assert signature_key_ids(obj, SERVER) == ["ed25519:a", "ed25519:c"]
    assert signature_key_ids(obj, "nobody.example") == []
    assert signature_key_ids({"signatures": {SERVER: "junk"}}, SERVER) == []


def test_key_file_line_round_trip() -> None:
    line = KEY.to_file_line()
    assert line.startswith("ed25519 k1 ")
    again = SigningKey.from_file_line(line)
    assert again.public_key_base64 == KEY.public_key_base64 and again.key_id == KEY.key_id
    # the same format as signedjson's key files
    assert signedjson.key.encode_signing_key_base64(THEIR_KEY) == line.split()[2]
    for bad in ("ed25519 k1", "rsa k1 AAAA", ""):
        with pytest.raises(ValueError):
            SigningKey.from_file_line(bad)


@pytest.mark.parametrize("bad", ["", "AAAA", "!!!", "A" * 44])
def test_malformed_verify_keys(bad: str) -> None:
    with pytest.raises(SignatureError):
        decode_verify_key(bad)


def test_verify_key_round_trip() -> None:
    assert bytes(decode_verify_key(KEY.public_key_base64)) == bytes(KEY.verify_key)


@given(st.binary(max_size=80), st.booleans(), st.booleans())
def test_fast_base64_decoding_matches_unpaddedbase64(data: bytes, urlsafe: bool, padded: bool) -> None:
    text = unpaddedbase64.encode_base64(data, urlsafe=urlsafe)
    if padded:
        text += "=" * (-len(text) % 4)
    assert decode_unpadded_base64(text) == unpaddedbase64.decode_base64(text) == data
