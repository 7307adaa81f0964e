"""Federation media routes (S2S "Content Repository", since v1.11): ``GET /_matrix/federation/v1/media/
download/{mediaId}`` and ``/thumbnail/{mediaId}``, answered multipart/mixed: a JSON part (an empty object
for now), then the bytes with their Content-Type and Content-Disposition. The file is streamed, never read
whole. Authentication and framing only; the media comes from ``source`` (ranvier.media.federation),
passed in so this transport module never imports the media package.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from aiohttp import web

from .keys import Keyring
from .request_auth import authenticate_request, json_error

V1 = "/_matrix/federation/v1"
_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_INTEGER = re.compile(r"[0-9]{1,9}")
READ_CHUNK = 256 * 1024
DEFAULT_TIMEOUT_MS = 20_000


@dataclass(frozen=True, slots=True)
class MediaPart:
    path: Path
    size: int
    headers: dict[str, str]  # Content-Type and Content-Disposition of the media part


class FederationMediaSource(Protocol):
    async def download(self, media_id: str, timeout_ms: int) -> MediaPart: ...
    async def thumbnail(
        self, media_id: str, width: int, height: int, method: str, timeout_ms: int
    ) -> MediaPart: ...


def _int(request: web.Request, name: str, default: int | None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise json_error(400, "M_MISSING_PARAM", f"missing query parameter {name}")
        return default
    if _INTEGER.fullmatch(raw) is None:
        raise json_error(400, "M_INVALID_PARAM", f"{name} must be a non-negative integer")
    return int(raw)


def _media_id(request: web.Request) -> str:
    media_id = request.match_info["media_id"]
    if _MEDIA_ID.fullmatch(media_id) is None:
        raise json_error(400, "M_INVALID_PARAM", "Invalid media ID")
    return media_id


async def _multipart(request: web.Request, part: MediaPart) -> web.StreamResponse:
    boundary = secrets.token_hex(16)
    head = [f"--{boundary}", "Content-Type: application/json", "", "{}", f"--{boundary}"]
    head += [f"{name}: {value}" for name, value in part.headers.items()]
    prefix = ("\r\n".join(head) + "\r\n\r\n").encode()
    suffix = f"\r\n--{boundary}--\r\n".encode()
    resp = web.StreamResponse(headers={"Content-Type": f"multipart/mixed; boundary={boundary}"})
    resp.content_length = len(prefix) + part.size + len(suffix)
    fh: BinaryIO = await asyncio.to_thread(part.path.open, "rb")
    try:
        await resp.prepare(request)
        await resp.write(prefix)
        while chunk := await asyncio.to_thread(fh.read, READ_CHUNK):
            await resp.write(chunk)
        await resp.write(suffix)
    finally:
        await asyncio.to_thread(fh.close)
    await resp.write_eof()
    return resp


def add_media_routes(
    app: web.Application, keyring: Keyring, server_name: str, source: FederationMediaSource
) -> None:
    async def download(request: web.Request) -> web.StreamResponse:
        await authenticate_request(request, keyring, server_name)
        media_id = _media_id(request)
        part = await source.download(media_id, _int(request, "timeout_ms", DEFAULT_TIMEOUT_MS))
        return await _multipart(request, part)

    async def thumbnail(request: web.Request) -> web.StreamResponse:
        await authenticate_request(request, keyring, server_name)
        media_id = _media_id(request)
        width, height = _int(request, "width", None), _int(request, "height", None)
        if width <= 0 or height <= 0:
            raise json_error(400, "M_INVALID_PARAM", "width and height must be positive")
        method = request.query.get("method", "scale")
        if method not in ("crop", "scale"):
            raise json_error(400, "M_INVALID_PARAM", "method must be crop or scale")
        timeout_ms = _int(request, "timeout_ms", DEFAULT_TIMEOUT_MS)
        return await _multipart(request, await source.thumbnail(media_id, width, height, method, timeout_ms))

    app.router.add_get(V1 + "/media/download/{media_id}", download)
    app.router.add_get(V1 + "/media/thumbnail/{media_id}", thumbnail)
