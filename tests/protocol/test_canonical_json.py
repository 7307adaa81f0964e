"""Canonical JSON: the appendix examples byte for byte, properties, and what must be refused."""

from __future__ import annotations

import json
import random
from typing import Any

import canonicaljson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ranvier.protocol.canonical_json import (
    MAX_SAFE_INT,
    MIN_SAFE_INT,
    encode_canonical_json,
    encode_members,
    parse_json,
)
from ranvier.protocol.errors import CanonicalJsonError

# Appendix "Signing JSON" > "Canonical JSON" > "Examples": (input text, expected canonical bytes).
APPENDIX_EXAMPLES: list[tuple[str, str]] = [
    ("{}", "{}"),
    ('{\n    "one": 1,\n    "two": "Two"\n}', '{"one":1,"two":"Two"}'),
    ('{\n    "b": "2",\n    "a": "1"\n}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        """{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}""",
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":'
        '[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},'
        '"success":true}}',
    ),
    ('{\n    "a": "日本語"\n}', '{"a":"日本語"}'),
    ('{\n    "本": 2,\n    "日": 1\n}', '{"日":1,"本":2}'),
    ('{\n    "a": "\\u65E5"\n}', '{"a":"日"}'),
    ('{\n    "a": null\n}', '{"a":null}'),
]


@pytest.mark.parametrize(("text", "expected"), APPENDIX_EXAMPLES)
def test_appendix_examples(text: str, expected: str) -> None:
    assert encode_canonical_json(parse_json(text)) == expected.encode("utf-8")


def test_appendix_example_with_float_formatted_integers() -> None:
    # The appendix's last example: -0 and 1e10 denote integers and come out as 0 and 10000000000.
    text = '{\n    "a": -0,\n    "b": 1e10\n}'
    assert encode_canonical_json(parse_json(text, integral_floats=True)) == b'{"a":0,"b":10000000000}'
    # From room version 6 float-formatted numbers are refused on the wire (v6-canonical-json fragment).
    with pytest.raises(CanonicalJsonError) as exc:
        parse_json(text)
    assert exc.value.errcode == "M_BAD_JSON"


@pytest.mark.parametrize(
    ("char", "escaped"),
    [
        ("\b", "\\b"),
        ("\t", "\\t"),
        ("\n", "\\n"),
        ("\f", "\\f"),
        ("\r", "\\r"),
        ('"', '\\"'),
        ("\\", "\\\\"),
        ("\x00", "\\u0000"),
        ("\x0b", "\\u000b"),
        ("\x1f", "\\u001f"),
        ("\x7f", "\x7f"),  # DEL is not a control character in the grammar's sense: unescaped
        ("/", "/"),
        ("\u2028", "\u2028"),
        ("\U0001f600", "\U0001f600"),  # astral code points as UTF-8, never as surrogate pairs
    ],
)
def test_string_escapes_follow_the_grammar(char: str, escaped: str) -> None:
    assert encode_canonical_json({"k": char}) == f'{{"k":"{escaped}"}}'.encode()


# -- properties ------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=MIN_SAFE_INT, max_value=MAX_SAFE_INT)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(st.characters(exclude_categories=("Cs",)), max_size=8), children, max_size=5
        )
    ),
    max_leaves=30,
)


def _shuffled(value: Any, rnd: random.Random) -> Any:
    """The same JSON value with every object's keys inserted in a random order."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rnd) for v in value]
    return value


@given(json_values)
def test_round_trip(value: Any) -> None:
    encoded = encode_canonical_json(value)
    assert parse_json(encoded) == value
    # encoding what was decoded gives the very same bytes (a fixed point)
    assert encode_canonical_json(parse_json(encoded)) == encoded


@given(json_values, st.randoms(use_true_random=False))
def test_deterministic_whatever_the_key_order(value: Any, rnd: random.Random) -> None:
    assert encode_canonical_json(_shuffled(value, rnd)) == encode_canonical_json(value)
    # and whatever whitespace the sender used
    assert encode_canonical_json(parse_json(json.dumps(value, indent=3))) == encode_canonical_json(value)


@given(json_values)
def test_agrees_with_the_canonicaljson_library(value: Any) -> None:
    assert encode_canonical_json(value) == canonicaljson.encode_canonical_json(value)


@given(json_values)
def test_output_has_no_insignificant_whitespace_or_escaped_non_ascii(value: Any) -> None:
    encoded = encode_canonical_json(value).decode("utf-8")
    # Any whitespace or \\u escape left must sit inside a string and be a character the grammar requires.
    assert encoded == json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1.5},
        {"a": 1.0},
        {"a": float("nan")},
        {"a": float("inf")},
        {"a": [float("-inf")]},
        {"a": MAX_SAFE_INT + 1},
        {"a": MIN_SAFE_INT - 1},
        {"a": 2**64},
        {"a": "\ud800"},  # lone surrogate
        {"\udfff": 1},  # lone surrogate in a key
        {1: "non-string key"},
        {"a": b"bytes"},
        {"a": {1, 2}},
    ],
    ids=repr,
)
def test_encoding_refuses_what_canonical_json_forbids(value: Any) -> None:
    with pytest.raises(CanonicalJsonError) as exc:
        encode_canonical_json(value)
    assert exc.value.errcode == "M_BAD_JSON"


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1.5}',
        '{"a": 2.0}',
        '{"a": 1e3}',
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": -Infinity}',
        '{"a": 9007199254740992}',
        '{"a": -9007199254740992}',
        '{"a": "\\ud800"}',  # escaped lone surrogate
        '{"a": 1' + "0" * 5000 + "}",  # an integer too long to even convert
        '{"a": ',
        "[" * 100_000 + "]" * 100_000,  # nesting deeper than any parser stack
    ],
    ids=lambda t: t[:40],
)
def test_parsing_refuses_bad_json(text: str) -> None:
    with pytest.raises(CanonicalJsonError) as exc:
        parse_json(text)
    assert exc.value.errcode == "M_BAD_JSON"


def test_invalid_utf8_bytes_are_refused() -> None:
    with pytest.raises(CanonicalJsonError):
        parse_json(b'{"a": "\xff\xfe"}')
    with pytest.raises(CanonicalJsonError):
        parse_json(b'{"a": "\xed\xa0\x80"}')  # CESU-style encoded surrogate


def test_lenient_mode_of_room_versions_1_to_5() -> None:
    # v1-canonical-json fragment: servers must not strictly enforce the format for v1-v5 events.
    value = parse_json('{"a": 1.5, "b": 9007199254740993}', strict=False)
    assert value == {"a": 1.5, "b": 9007199254740993}
    assert encode_canonical_json(value, strict=False) == b'{"a":1.5,"b":9007199254740993}'
    with pytest.raises(CanonicalJsonError):
        parse_json('{"a": NaN}', strict=False)
    with pytest.raises(CanonicalJsonError):
        encode_canonical_json({"a": float("nan")}, strict=False)


def test_safe_integer_bounds_are_inclusive() -> None:
    assert encode_canonical_json([MAX_SAFE_INT, MIN_SAFE_INT]) == b"[9007199254740991,-9007199254740991]"


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=8), st.data())
def test_members_assemble_into_the_canonical_encoding(obj: dict[str, Any], data: st.DataObject) -> None:
    """encode_members: any subset of the members, sorted and joined, is the encoding of that subset."""
    if data.draw(st.booleans()):
        obj["sha256"] = {"sha256": data.draw(st.text(max_size=10))}  # the hashes fast path, with escapes
    members = encode_members(obj)
    subset = data.draw(st.sets(st.sampled_from(sorted(obj)))) if obj else set()
    assembled = "{" + ",".join(members[k] for k in sorted(subset)) + "}"
    assert assembled.encode("utf-8") == encode_canonical_json({k: obj[k] for k in subset})
