"""Content-Type and Content-Disposition of served media (CS "Serving inline content").

``inline`` only for the spec's list of types that cannot run script when served with their own
Content-Type; everything else is an ``attachment``. Every answer also carries ``nosniff`` and the
recommended sandboxing Content-Security-Policy, so that a browser never renders an upload as a page.
"""

from __future__ import annotations

import re
from urllib.parse import quote

DEFAULT_CONTENT_TYPE = "application/octet-stream"

# CS "Serving inline content": the types servers may serve with Content-Disposition: inline.
INLINE_SAFE_TYPES = frozenset(
    {
        "text/css",
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/apng",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/webm",
        "audio/aac",
        "audio/mpeg",
        "audio/ogg",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/flac",
        "audio/x-flac",
    }
)

# CS "Content repository": the recommended policy, and CORP for web clients (since v1.4).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
        "style-src 'unsafe-inline'; object-src 'self';"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
}

_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=(?:{_TOKEN}|\"[ -~]*\"))*")
MAX_CONTENT_TYPE = 255
MAX_UPLOAD_NAME = 255
# Characters that may stand in a quoted filename="..." without escaping (printable ASCII, no quote or \).
_PLAIN_FILENAME = re.compile(r"[ !#-\[\]-~]+")


def normalise_content_type(value: str | None) -> str:
    """What an upload is stored as: the client's type when it is a well-formed ``type/subtype`` with
    parameters, else ``application/octet-stream`` (CS: the default when absent)."""
    if value is None:
        return DEFAULT_CONTENT_TYPE
    value = value.strip()
    if not value or len(value) > MAX_CONTENT_TYPE or _CONTENT_TYPE.fullmatch(value) is None:
        return DEFAULT_CONTENT_TYPE
    return value


def essence(content_type: str) -> str:
    """``type/subtype`` in lower case, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def is_inline_safe(content_type: str) -> bool:
    return essence(content_type) in INLINE_SAFE_TYPES


def valid_upload_name(name: str) -> bool:
    return 0 < len(name) <= MAX_UPLOAD_NAME and all(ch >= " " and ch != "\x7f" for ch in name)


def content_disposition(content_type: str, filename: str | None, *, force_inline: bool = False) -> str:
    """``inline`` for the safe types (thumbnails always), ``attachment`` otherwise, with the file name
    (RFC 6266: a quoted ASCII ``filename``, or ``filename*`` in UTF-8 for anything else)."""
    disposition = "inline" if force_inline or is_inline_safe(content_type) else "attachment"
    if not filename:
        return disposition
    if _PLAIN_FILENAME.fullmatch(filename):
        return f'{disposition}; filename="{filename}"'
    return f"{disposition}; filename*=utf-8''{quote(filename, safe='')}"


def served_headers(content_type: str, filename: str | None, *, force_inline: bool = False) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        "Content-Disposition": content_disposition(content_type, filename, force_inline=force_inline),
        **SECURITY_HEADERS,
    }
