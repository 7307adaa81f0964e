"""The ``X-Matrix`` Authorization header (S2S "Authentication" > "Request Authentication").

Pure and synchronous: building, parsing, signing and verifying take data and return data. The caller
fetches the origin's key first (``Keyring.prefetch``) and passes a synchronous ``KeyLookup``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ranvier.protocol.canonical_json import encode_canonical_json, encode_string, utf8
from ranvier.protocol.errors import CanonicalJsonError, ProtocolError, SignatureError
from ranvier.protocol.events import KeyLookup
from ranvier.protocol.identifiers import is_valid_server_name
from ranvier.protocol.signing import SigningKey, verify_json_signature, verify_signature_bytes

SCHEME = "X-Matrix"


class RequestAuthError(ProtocolError):
    """A federation request is not (validly) signed; the HTTP edge answers 401 M_UNAUTHORIZED."""

    errcode = "M_UNAUTHORIZED"
    status = 401


@dataclass(frozen=True)
class XMatrixAuth:
    origin: str
    # Optional on receipt for compatibility with servers older than v1.3; we always send it.
    destination: str | None
    key: str
    sig: str

    def __post_init__(self) -> None:
        if not is_valid_server_name(self.origin):
            raise RequestAuthError(f"X-Matrix origin is not a server name: {self.origin!r}")
        if self.destination is not None and not is_valid_server_name(self.destination):
            raise RequestAuthError(f"X-Matrix destination is not a server name: {self.destination!r}")
        if not self.key or not self.sig:
            raise RequestAuthError("X-Matrix key and sig must not be empty")


def _quote(value: str) -> str:
    # Senders should avoid backslashes (compatibility note in the spec); server names, key ids and
    # base64 never contain '"' or '\\', but escape anyway so the header always parses back.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_x_matrix(auth: XMatrixAuth) -> str:
    """The header value, in the conservative form the spec asks senders to use for old servers:
    one space after the scheme, lower-case names, no whitespace around commas."""
    params = [("origin", auth.origin)]
    if auth.destination is not None:
        params.append(("destination", auth.destination))
    params += [("key", auth.key), ("sig", auth.sig)]
    return f"{SCHEME} " + ",".join(f"{name}={_quote(value)}" for name, value in params)


def _parse_params(text: str) -> dict[str, str]:
    """Parse ``name=value`` pairs separated by commas (RFC 9110 section 11.4 auth-params).

    Values are tokens or quoted strings with backslash escapes. Unquoted values may contain colons (the
    spec asks recipients to allow that for older servers) and are otherwise read up to a comma or space.
    """
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            return params
        eq = text.find("=", i)
        if eq < 0:
            raise RequestAuthError("malformed X-Matrix parameter (no '=')")
        name = text[i:eq].strip(" \t").lower()
        if not name or any(c in name for c in ' \t,"'):
            raise RequestAuthError(f"malformed X-Matrix parameter name {name!r}")
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise RequestAuthError("unterminated quoted value in X-Matrix header")
                c = text[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise RequestAuthError("dangling backslash in X-Matrix header")
                    chars.append(text[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    chars.append(c)
                    i += 1
            value = "".join(chars)
        else:
            start = i
            while i < n and text[i] not in ", \t":
                i += 1
            value = text[start:i]
            if '"' in value:
                raise RequestAuthError("stray quote in X-Matrix header")
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] != ",":
            raise RequestAuthError("X-Matrix parameters must be separated by commas")
        if name in params:
            # Two values for one name would let a proxy and us disagree on what was signed.
            raise RequestAuthError(f"duplicate X-Matrix parameter {name!r}")
        params[name] = value


def parse_x_matrix(header: str) -> XMatrixAuth:
    """Parse an ``Authorization`` header value; unknown parameters are ignored (as the spec says)."""
    scheme, sep, rest = header.strip(" \t").partition(" ")
    if scheme.lower() != SCHEME.lower() or not sep:
        raise RequestAuthError("Authorization header is not of the X-Matrix scheme")
    params = _parse_params(rest)
    missing = [p for p in ("origin", "key", "sig") if p not in params]
    if missing:
        raise RequestAuthError(f"X-Matrix header lacks {', '.join(missing)}")
    return XMatrixAuth(params["origin"], params.get("destination"), params["key"], params["sig"])


def request_json(method: str, uri: str, origin: str, destination: str, content: Any | None) -> dict[str, Any]:
    """The object that is signed (step 1). ``content`` is the parsed JSON body; ``None`` when there is no
    body, in which case the key is left out rather than set to null."""
    obj: dict[str, Any] = {"method": method.upper(), "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def signed_request_bytes(
    method: str, uri: str, origin: str, destination: str, canonical_content: bytes | None
) -> bytes:
    """The canonical JSON of ``request_json(...)`` when the content is already canonical JSON bytes: they
    are spliced in, not encoded again ("content" sorts before "destination", "method", "origin", "uri")."""
    members = [
        encode_string(key) + ":" + encode_string(value)
        for key, value in (
            ("destination", destination),
            ("method", method.upper()),
            ("origin", origin),
            ("uri", uri),
        )
    ]
    head = b'{"content":' + canonical_content + b"," if canonical_content is not None else b"{"
    return head + utf8(",".join(members)) + b"}"


def sign_encoded_request(
    method: str, uri: str, origin: str, destination: str, canonical_content: bytes | None, key: SigningKey
) -> str:
    """``sign_request`` for a body already encoded as canonical JSON (the bytes about to be sent): the
    same signature, without encoding the body a second time."""
    sig = key.sign_bytes(signed_request_bytes(method, uri, origin, destination, canonical_content))
    return format_x_matrix(XMatrixAuth(origin, destination, key.key_id, sig))


def sign_request(
    method: str, uri: str, origin: str, destination: str, content: Any | None, key: SigningKey
) -> str:
    """The ``Authorization`` header value for a request; ``uri`` is the path with its query string.

    Signed over the lenient canonical encoding, as ``verify_request`` checks it: a transaction may forward
    events of room versions 1-5 that carry floats or big integers."""
    sig = key.sign_bytes(
        encode_canonical_json(request_json(method, uri, origin, destination, content), False)
    )
    return format_x_matrix(XMatrixAuth(origin, destination, key.key_id, sig))


def verify_request(
    auth: XMatrixAuth,
    *,
    method: str,
    uri: str,
    content: Any | None,
    our_server_name: str,
    lookup: KeyLookup,
    now_ms: int,
    raw_content: bytes | None = None,
) -> str:
    """Check a parsed header against the request; return the authenticated origin server name.

    ``raw_content`` is the body as received, ``content`` what it parsed to. Senders encode the body as
    canonical JSON (we do, Synapse does), and then the signed object's canonical encoding is those very
    bytes with the other members around them: they are checked first, which spares re-encoding a body of
    up to 50 PDUs on every /send. A body sent otherwise falls back to encoding what it parsed to. Either
    way the signature covers exactly the body that is acted on.

    Only keys that are currently valid may sign requests: ``old_verify_keys`` are for events only
    (S2S "Publishing Keys"), and the keyring reports them with ``valid_until_ts`` = their ``expired_ts``.
    """
    if auth.destination is not None and auth.destination != our_server_name:
        # S2S: "the receiving server must deny the request with an HTTP status code 401".
        raise RequestAuthError(f"request is addressed to {auth.destination}, not to us")
    info = lookup(auth.origin, auth.key)
    if info is None:
        raise RequestAuthError(f"unknown key {auth.key} of {auth.origin}")
    if info.valid_until_ts is not None and info.valid_until_ts < now_ms:
        raise RequestAuthError(f"key {auth.key} of {auth.origin} is no longer valid for requests")
    destination = auth.destination if auth.destination is not None else our_server_name
    if raw_content is not None:
        try:
            spliced = signed_request_bytes(method, uri, auth.origin, destination, raw_content)
            verify_signature_bytes(spliced, auth.sig, info.key)
            return auth.origin
        except (CanonicalJsonError, SignatureError):
            pass  # not sent as canonical JSON (or forged): the canonical encoding decides below
    obj = request_json(method, uri, auth.origin, destination, content)
    obj["signatures"] = {auth.origin: {auth.key: auth.sig}}
    try:
        # Lenient numbers: a /send body may carry events of room versions 1-5 with floats and big integers,
        # which their senders sign as such (Synapse does); each event is checked for its version later.
        verify_json_signature(obj, auth.origin, auth.key, info.key, strict=False)
    except SignatureError as e:
        raise RequestAuthError(f"invalid X-Matrix signature from {auth.origin}: {e.message}") from e
    return auth.origin
