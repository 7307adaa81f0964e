"""Small helpers shared by the client API handlers: strict body parsing and parameter access."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..protocol.canonical_json import parse_json
from ..protocol.errors import CanonicalJsonError
from .errors import MatrixError, bad_json, invalid_param, missing_param

# At most 4300 digits: longer strings are refused by int() itself (CPython's limit on conversions).
_INTEGER = re.compile(r"[+-]?[0-9]{1,4300}")


async def read_json_body(
    request: web.Request, *, allow_empty: bool = False, strict: bool = True
) -> dict[str, Any]:
    """The request body as a JSON object; malformed JSON is M_NOT_JSON, a non-object M_BAD_JSON.
    ``strict=False`` admits floats and big integers, for data that is never signed (account data)."""
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return {}
        raise MatrixError(400, "M_NOT_JSON", "Request body is empty; a JSON object is required")
    try:
        # The C-S API rejects what canonical JSON forbids (floats, out-of-range ints), as v6+ rooms do.
        body = parse_json(raw, strict=strict)
    except CanonicalJsonError as e:
        if "malformed JSON" in e.message:
            raise MatrixError(400, "M_NOT_JSON", "Content not JSON: " + e.message) from None
        raise bad_json(e.message) from None
    if not isinstance(body, dict):
        raise bad_json("Request body must be a JSON object")
    return body


def require_str(body: dict[str, Any], key: str) -> str:
    if key not in body:
        raise missing_param(f"Missing '{key}'")
    value = body[key]
    if not isinstance(value, str):
        raise invalid_param(f"'{key}' must be a string")
    return value


def optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid_param(f"'{key}' must be a string")
    return value


def query_int(request: web.Request, key: str, default: int, lo: int = 0, hi: int = 2**53) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    # ASCII digits with an optional sign: int() alone also takes other scripts' digits, "1_000" and spaces.
    if _INTEGER.fullmatch(raw) is None:
        raise invalid_param(f"query parameter '{key}' must be an integer")
    return max(lo, min(hi, int(raw)))


def access_token_from(request: web.Request) -> str | None:
    """The bearer token. Query-string tokens are no longer allowed (unstable spec, MSC4127), but
    older clients still send them, so they are accepted as a fallback."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return request.query.get("access_token")
