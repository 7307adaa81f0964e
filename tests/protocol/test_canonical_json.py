"""Canonical JSON: the appendix examples byte for byte, properties, and what must be refused."""

from __future__ import annotations

import datetime
import enum
import json
import random
import uuid
from typing import Any

import canonicaljson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ranvier.protocol.canonical_json import (
    MAX_SAFE_INT,
    MIN_SAFE_INT,
    check_canonical,
    encode_canonical_json,
    encode_unchecked,
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


# -- orjson against the json module ----------------------------------------------------------------
# encode_canonical_json hands values in the strict domain to orjson. Whatever the value, in the domain or
# not, the outcome must be the json module's: the same bytes, or CanonicalJsonError for both.


class _Str(str):
    pass


class _Int(int):
    pass


class _Dict(dict[str, Any]):
    pass


class _Colour(enum.Enum):
    RED = "red"


_edge_ints = st.sampled_from(
    [
        MAX_SAFE_INT,
        MAX_SAFE_INT + 1,
        MIN_SAFE_INT,
        MIN_SAFE_INT - 1,
        2**63 - 1,
        2**63,
        -(2**63),
        2**64,
        -(2**64),
    ]
)
# The characters that are escaped, or that an encoder could be tempted to escape (DEL, U+2028, BOM, ...).
_escapable = st.sampled_from(
    [*(chr(c) for c in range(0x20)), "\x7f", '"', "\\", "/", "\u2028", "\u2029", "\ufeff", "\uffff"]
)
# Any code point but lone surrogates, often an escapable one.
_plain_text = st.text(st.characters() | _escapable | st.sampled_from(["é", "日", "\U0001f600"]), max_size=12)
# Now and then a lone surrogate (category Cs), which orjson refuses and the json module's path reports.
_any_text = _plain_text | st.text(st.characters(categories=["Cs"]) | st.characters(), min_size=1, max_size=4)
_odd_scalars = st.sampled_from(
    [b"bytes", _Colour.RED, uuid.UUID(int=1), datetime.date(2026, 1, 1), _Str("s"), _Int(3), {1, 2}]
)
_any_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | _edge_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | _any_text
    | _odd_scalars
)
_any_values = st.recursive(
    _any_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(_any_text | st.just(_Str("k")) | st.integers(0, 2), children, max_size=4)
        | st.dictionaries(_any_text, children, max_size=2).map(_Dict)
    ),
    max_leaves=20,
)
# Mostly in the domain, so that orjson's own output is what gets compared (big integers aside).
_mostly_plain = st.recursive(
    json_scalars | _plain_text | _edge_ints,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_plain_text, children, max_size=5),
    max_leaves=40,
)


def _json_module_outcome(value: Any, strict: bool) -> bytes | type[Exception]:
    """What encode_canonical_json gave before orjson: the checks, then the json module's C encoder."""
    try:
        check_canonical(value, strict)
        return encode_unchecked(value)
    except CanonicalJsonError:
        return CanonicalJsonError


def _outcome(value: Any, strict: bool) -> bytes | type[Exception]:
    try:
        return encode_canonical_json(value, strict)
    except CanonicalJsonError:
        return CanonicalJsonError


@settings(max_examples=400)
@given(_any_values | _mostly_plain, st.booleans())
def test_orjson_and_the_json_module_agree_on_every_value(value: Any, strict: bool) -> None:
    assert _outcome(value, strict) == _json_module_outcome(value, strict)


@settings(max_examples=200)
@given(_mostly_plain)
def test_orjson_output_is_the_canonicaljson_librarys(value: Any) -> None:
    try:
        ours = encode_canonical_json(value)
    except CanonicalJsonError:  # lone surrogates, big integers: refused (tested above)
        return
    assert ours == canonicaljson.encode_canonical_json(value)


@pytest.mark.parametrize("depth", [250, 300, 5000])
def test_nesting_beyond_orjsons_limit_falls_back(depth: int) -> None:
    """orjson stops at 254 levels; the json module goes on until the interpreter's recursion limit."""
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    assert _outcome(value, True) == _json_module_outcome(value, True)
    if depth <= 300:
        assert encode_canonical_json(value).count(b"[") == depth // 2
