"""Canonical JSON per the spec appendix ("Signing JSON" > "Canonical JSON").

Python's json encoder already produces the right bytes for the spec's grammar when keys are sorted (by code
point, which is how Python compares ``str``), separators are compact and non-ASCII is left unescaped: it
escapes only ``"``, ``\\``, the short forms ``\\b \\f \\n \\r \\t`` and other control characters as
lower-case ``\\u00XX``. What it does not do is refuse what canonical JSON forbids, so that is checked first.

orjson writes the same bytes about ten times faster (0.5 against 6 us for a PDU) and is used for values in
the strict domain that ``check_canonical`` has passed: exact ``dict``/``list``/``tuple``/``str``/``int``/
``bool``/``None``, integers within +-(2**53-1) (``OPT_STRICT_INTEGER`` refuses the rest anyway). Its string
escapes are the json module's (both the grammar's, listed above), it sorts keys by their UTF-8 bytes, which
orders strings as their code points do, and it refuses lone surrogates and nesting deeper than 254 levels:
those values go to the json encoder, which says what is wrong or encodes them. Floats and big integers
(allowed in room versions 1-5) never reach orjson: its float formatting differs from Python's ``repr``.
tests/protocol/test_canonical_json.py checks the two encoders agree on every value, in the domain or not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from .errors import CanonicalJsonError

MAX_SAFE_INT = 2**53 - 1
MIN_SAFE_INT = -(2**53) + 1


def _refuse(value: Any) -> Any:
    raise TypeError(f"value of type {type(value).__name__} is not JSON")


# The C encoder, made once: json.JSONEncoder.encode builds a new one on every call, which costs more than
# encoding a small object (hashes, signatures). Same settings as the spec's Python snippet.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encode: Callable[[Any, int], Any] | None = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(None, _refuse, json.encoder.encode_basestring, None, ":", ",", True, False, False)
)
_py_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"), check_circular=False
)


def check_canonical(value: Any, strict: bool = True) -> None:
    """Raise CanonicalJsonError unless ``value`` is representable in canonical JSON.

    ``strict=False`` is for room versions 1-5, whose events may carry floats and big integers (the spec's
    "v1-canonical-json" fragment); everything else about the encoding stays the same.
    """
    # Hot path of every received PDU: an explicit stack, and strings (most values) never pushed.
    stack = [value]
    pop = stack.pop
    push = stack.append
    while stack:
        v = pop()
        t = type(v)
        if t is dict:
            for k, x in v.items():
                if type(k) is not str:
                    raise CanonicalJsonError(f"object key {k!r} is not a string")
                if type(x) is not str:
                    push(x)
        elif t is str or v is None or t is bool:
            continue
        elif t is list or t is tuple:
            stack.extend(v)
        elif t is int:
            if strict and not MIN_SAFE_INT <= v <= MAX_SAFE_INT:
                raise CanonicalJsonError(f"integer {v} is outside [-(2**53)+1, (2**53)-1]")
        elif t is float:
            if not strict and v == v and v not in (float("inf"), float("-inf")):
                continue
            raise CanonicalJsonError(f"number {v!r} is not an integer; canonical JSON has no floats")
        else:
            raise CanonicalJsonError(f"value of type {t.__name__} is not JSON")


def encode_canonical_json(value: Any, strict: bool = True) -> bytes:
    """Encode ``value`` as canonical JSON bytes, refusing anything the spec forbids."""
    try:
        check_canonical(value)
    except CanonicalJsonError:
        if strict:
            raise
        check_canonical(value, strict)  # room versions 1-5: floats and big integers, for json to encode
        return encode_unchecked(value)
    return encode_strict(value)


ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def encode_strict(value: Any) -> bytes:
    """Canonical bytes of a value that passed ``check_canonical(value)`` (strict): orjson, or the json
    encoder for what orjson refuses (a lone surrogate, which raises CanonicalJsonError, or deep nesting)."""
    try:
        return orjson.dumps(value, option=ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return encode_unchecked(value)


def encode_unchecked(value: Any) -> bytes:
    """Canonical bytes of a value already known to be valid (e.g. a slice of a checked event).

    Lone surrogates are still caught here: they survive ``check_canonical`` and only fail at UTF-8 encoding.
    """
    return utf8(encode_text(value))


# The canonical text of a JSON string, for callers assembling canonical JSON from pieces (Pdu does).
encode_string: Callable[[str], str] = json.encoder.encode_basestring


def encode_text(value: Any) -> str:
    """Canonical JSON of a checked value as ``str``; pair with ``utf8`` to get the bytes."""
    try:
        if _c_encode is not None:
            return "".join(_c_encode(value, 0))
        return _py_encoder.encode(value)  # pragma: no cover - interpreters without _json
    except RecursionError as e:  # the C encoder recurses; absurd nesting is the sender's problem
        raise CanonicalJsonError("value is nested too deeply") from e
    except (TypeError, ValueError) as e:  # only reachable when the value was not checked first
        raise CanonicalJsonError(f"value is not canonical JSON: {e}") from e


def utf8(text: str) -> bytes:
    """UTF-8 bytes of canonical JSON text; a lone surrogate is a CanonicalJsonError."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CanonicalJsonError(f"string is not valid unicode (lone surrogate?): {e.reason}") from e


def _reject_constant(name: str) -> Any:
    raise CanonicalJsonError(f"{name} is not valid JSON")


def _reject_float(text: str) -> Any:
    raise CanonicalJsonError(f"number {text} is not an integer; canonical JSON has no floats")


def _integral_float(text: str) -> int:
    # Exact arithmetic (Decimal, not float) so that e.g. 9007199254740993.0 is not silently rounded.
    try:
        number = Decimal(text)
    except InvalidOperation as e:  # pragma: no cover - json only hands us well-formed numbers
        raise CanonicalJsonError(f"malformed number {text}") from e
    # Bound the magnitude before int(): "1e999999999" would otherwise build a billion-digit integer.
    if not number.is_finite() or number.adjusted() > 308 or number != number.to_integral_value():
        raise CanonicalJsonError(f"number {text} is not an integer that canonical JSON can represent")
    return int(number)


def parse_json(data: bytes | bytearray | str, *, strict: bool = True, integral_floats: bool = False) -> Any:
    """Parse JSON received from the network.

    With ``strict`` (room versions 6+ and the client API), floats, out-of-range integers and non-finite
    constants are refused. Duplicate keys are tolerated as JSON parsers commonly do (last one wins).

    ``integral_floats`` accepts float-formatted numbers whose value is an exact integer (``1e10``,
    ``2.0``) as that integer, which is how the appendix's last canonical JSON example reads. It is off by
    default because from room version 6 numbers "may no longer be formatted as floats" on the wire.

    Strings must be valid Unicode: bytes are decoded as strict UTF-8 (``json.loads`` alone would let
    UTF-8-encoded surrogates through), and an escaped lone surrogate such as ``"\\ud800"`` is refused.
    """
    parse_float: Callable[[str], Any]
    if integral_floats:
        parse_float = _integral_float
    else:
        parse_float = _reject_float if strict else float
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant, parse_float=parse_float)
    except CanonicalJsonError:
        raise
    except (ValueError, UnicodeDecodeError) as e:
        raise CanonicalJsonError(f"malformed JSON: {e}") from e
    except RecursionError as e:
        raise CanonicalJsonError("JSON is nested too deeply") from e
    if "\\ud" in text or "\\uD" in text:
        # Rare path: a surrogate escape. Valid pairs were joined by the parser; a lone one fails to encode.
        encode_unchecked(value)
    if strict:
        check_canonical(value)
    return value
