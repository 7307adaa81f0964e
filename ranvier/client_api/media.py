"""The content repository's client routes (CS "Content repository"): thin, over ranvier.media.

* ``POST /_matrix/media/v3/upload``, ``POST /_matrix/media/v1/create`` + ``PUT /_matrix/media/v3/upload/
  {serverName}/{mediaId}``: the body is streamed to disk by the repository, never read whole. The listener's
  body guard (ranvier.http_limits) refuses a declared ``Content-Length`` over ``max_upload_size`` before a
  byte is read and leaves these bodies to the handler, which authenticates first and then streams them under
  the same limit (a chunked body that grows past it is cut off with 413 ``M_TOO_LARGE``).
* Downloads and thumbnails: the authenticated ``/_matrix/client/v1/media/*`` (since v1.11) and the
  deprecated unauthenticated ``/_matrix/media/v3/*``, which are frozen (v1.12) for media stored after
  ``freeze_after_ms``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from ..http_limits import GuardedRequestHandler
from ..media.errors import MediaError
from ..media.headers import served_headers, valid_upload_name
from ..media.preview import UrlPreviewer
from ..media.repository import MediaRepository, ServedFile
from ..protocol.identifiers import is_valid_server_name
from ..ratelimit import RateLimiter, limit_exceeded_body
from .auth import Authenticator
from .errors import MatrixError, error_response, invalid_param, missing_param
from .http_util import query_int

LEGACY = ("/_matrix/media/v3", "/_matrix/media/r0")
AUTHED = "/_matrix/client/v1/media"
_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
DEFAULT_TIMEOUT_MS = 20_000


def _matrix(e: MediaError) -> MatrixError:
    return MatrixError(e.status, e.errcode, e.message, **e.extra)


def _ids(request: web.Request) -> tuple[str, str]:
    server_name, media_id = request.match_info["server_name"], request.match_info["media_id"]
    # CS "Security considerations": only valid server names and [A-Za-z0-9_-] media ids, never a path.
    if not is_valid_server_name(server_name):
        raise invalid_param("Invalid server name in the media URI")
    if _MEDIA_ID.fullmatch(media_id) is None:
        raise invalid_param("Invalid media ID: only A-Z, a-z, 0-9, '_' and '-' are allowed")
    return server_name, media_id


def _bool(request: web.Request, key: str, default: bool) -> bool:
    raw = request.query.get(key)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise invalid_param(f"query parameter '{key}' must be true or false")
    return raw == "true"


def _upload_name(request: web.Request) -> str | None:
    name = request.query.get("filename")
    if name is None or name == "":
        return None
    if not valid_upload_name(name):
        raise invalid_param("filename must be at most 255 characters, without control characters")
    return name


async def _body_chunks(request: web.Request, body_timeout: float) -> AsyncIterator[bytes]:
    """The request body as it arrives, under the connection's body deadline (ranvier.http_limits)."""
    loop = asyncio.get_running_loop()
    deadline = getattr(request.protocol, "body_deadline", None)
    if deadline is None:
        deadline = loop.time() + body_timeout
    while True:
        async with asyncio.timeout_at(deadline):
            chunk = await request.content.readany()
        if not chunk:
            return
        yield chunk


def _close_after(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """Answer, then close: the rest of the refused body is not wanted."""
    resp.force_close()
    if isinstance(request.protocol, GuardedRequestHandler):
        request.protocol.linger_briefly()
    return resp


def _serve(file: ServedFile, filename: str | None, *, thumbnail: bool = False) -> web.FileResponse:
    headers = served_headers(file.content_type, filename, force_inline=thumbnail)
    # The same bytes forever under a media id: caches may keep them.
    headers["Cache-Control"] = "public, max-age=86400, immutable"
    return web.FileResponse(file.path, headers=headers)


class MediaHandlers:
    def __init__(
        self,
        repository: MediaRepository,
        authenticator: Authenticator,
        *,
        upload_limiter: RateLimiter | None,
        upload_timeout: float,
        freeze_after_ms: int | None,
        previewer: UrlPreviewer | None = None,
    ) -> None:
        self._repo = repository
        self._previewer = previewer
        self._auth = authenticator
        self._limiter = upload_limiter
        self._upload_timeout = upload_timeout
        self._freeze_after_ms = freeze_after_ms

    def routes(self) -> list[web.RouteDef]:
        ids = "{server_name}/{media_id}"
        routes = [
            web.post("/_matrix/media/v1/create", self.create),
            web.get(f"{AUTHED}/config", self.config),
            web.get(f"{AUTHED}/download/{ids}", self.download),
            web.get(f"{AUTHED}/download/{ids}/{{file_name}}", self.download),
            web.get(f"{AUTHED}/thumbnail/{ids}", self.thumbnail),
        ]
        if self._previewer is not None:
            # Off by default: unrouted (404 M_UNRECOGNIZED) unless media.url_preview.enabled.
            routes += [
                web.get(f"{AUTHED}/preview_url", self.preview_url),
                *(web.get(f"{prefix}/preview_url", self.preview_url) for prefix in LEGACY),
            ]
        for prefix in LEGACY:
            routes += [
                web.post(f"{prefix}/upload", self.upload),
                web.put(f"{prefix}/upload/{ids}", self.upload_to),
                web.get(f"{prefix}/config", self.config),
                web.get(f"{prefix}/download/{ids}", self.legacy_download),
                web.get(f"{prefix}/download/{ids}/{{file_name}}", self.legacy_download),
                web.get(f"{prefix}/thumbnail/{ids}", self.legacy_thumbnail),
            ]
        return routes

    # -- uploads -------------------------------------------------------------------------------------

    def _rate_limit(self, user_id: str) -> None:
        if self._limiter is None:
            return
        wait = self._limiter.try_acquire(user_id)
        if wait is not None:
            body: dict[str, Any] = limit_exceeded_body(wait)
            raise MatrixError(429, body.pop("errcode"), body.pop("error"), **body)

    async def _stream_into(
        self, request: web.Request, store: Callable[[AsyncIterator[bytes]], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Run ``store(chunks)``; the errors of reading a body become answers that close the connection."""
        try:
            return await store(_body_chunks(request, self._upload_timeout))
        except MediaError as e:
            resp = web.json_response(_matrix(e).to_json(), status=e.status)
            return _close_after(request, resp) if e.status == 413 else resp
        except TimeoutError:
            resp = web.json_response(
                {"errcode": "M_UNKNOWN", "error": f"Upload not received within {self._upload_timeout}s"},
                status=408,
            )
            return _close_after(request, resp)
        except (ConnectionError, RequestPayloadError) as e:
            resp = web.json_response({"errcode": "M_UNKNOWN", "error": f"Upload failed: {e}"}, status=400)
            return _close_after(request, resp)

    async def _before_body(self, request: web.Request) -> tuple[str, str | None]:
        """Authenticate, rate-limit and check the quota of an upload before its body is read: the user and
        the file name."""
        requester = await self._auth.require_user(request)
        self._rate_limit(requester.user_id)
        name = _upload_name(request)
        try:
            await self._repo.check_quota(requester.user_id, request.content_length)
        except MediaError as e:
            raise _matrix(e) from None
        if isinstance(request.protocol, GuardedRequestHandler):
            # Authenticated: the body may take upload_timeout (a big file, a slow link), not the listener's
            # body_timeout meant for JSON bodies.
            request.protocol.extend_body_deadline(self._upload_timeout)
        return requester.user_id, name

    async def upload(self, request: web.Request) -> web.StreamResponse:
        try:
            user_id, name = await self._before_body(request)
        except MatrixError as e:
            # Refused before the body is read: close rather than read (and drop) what is still coming.
            return _close_after(request, error_response(e))
        content_type = request.headers.get("Content-Type")

        async def store(chunks: AsyncIterator[bytes]) -> web.StreamResponse:
            uri = await self._repo.upload(user_id, chunks, content_type, name)
            return web.json_response({"content_uri": uri})

        return await self._stream_into(request, store)

    async def create(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        self._rate_limit(requester.user_id)
        try:
            uri, expires = await self._repo.create(requester.user_id)
        except MediaError as e:
            raise _matrix(e) from None
        return web.json_response({"content_uri": uri, "unused_expires_at": expires})

    async def upload_to(self, request: web.Request) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type")
        try:
            user_id, name = await self._before_body(request)
            server_name, media_id = _ids(request)
            # Refused before a byte of the body is read when the id is unknown, someone else's or used.
            await self._repo.check_upload_to(user_id, server_name, media_id)
        except MediaError as e:
            return _close_after(request, error_response(_matrix(e)))
        except MatrixError as e:
            return _close_after(request, error_response(e))

        async def store(chunks: AsyncIterator[bytes]) -> web.StreamResponse:
            await self._repo.upload_to(user_id, server_name, media_id, chunks, content_type, name)
            # The spec's answer is an empty object; mautrix reads content_uri from it, so it is added.
            return web.json_response({"content_uri": self._repo.mxc(media_id)})

        return await self._stream_into(request, store)

    async def config(self, request: web.Request) -> web.Response:
        await self._auth.require_user(request)
        return web.json_response({"m.upload.size": self._repo.limits.max_upload_size})

    async def preview_url(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        assert self._previewer is not None
        url = request.query.get("url")
        if not url:
            raise missing_param("url is required")
        self._rate_limit(requester.user_id)
        try:
            return web.json_response(await self._previewer.preview(requester.user_id, url))
        except MediaError as e:
            raise _matrix(e) from None

    # -- downloads -----------------------------------------------------------------------------------

    async def _download(self, request: web.Request, *, legacy: bool) -> web.StreamResponse:
        server_name, media_id = _ids(request)
        timeout_ms = query_int(request, "timeout_ms", DEFAULT_TIMEOUT_MS)
        # The authenticated endpoints have no allow_remote (a server never calls them for another).
        allow_remote = _bool(request, "allow_remote", True) if legacy else True
        try:
            if legacy and not await self._repo.is_legacy_visible(
                server_name, media_id, self._freeze_after_ms
            ):
                raise MediaError(404, "M_NOT_FOUND", "Not found: use the authenticated media endpoints")
            file = await self._repo.file(
                server_name, media_id, timeout_ms=timeout_ms, allow_remote=allow_remote
            )
        except MediaError as e:
            raise _matrix(e) from None
        filename = request.match_info.get("file_name") or file.upload_name
        return _serve(file, filename)

    async def download(self, request: web.Request) -> web.StreamResponse:
        await self._auth.require_user(request)
        return await self._download(request, legacy=False)

    async def legacy_download(self, request: web.Request) -> web.StreamResponse:
        return await self._download(request, legacy=True)

    async def _thumbnail(self, request: web.Request, *, legacy: bool) -> web.StreamResponse:
        server_name, media_id = _ids(request)
        if "width" not in request.query or "height" not in request.query:
            raise missing_param("width and height are required")
        width = query_int(request, "width", 0, lo=-1, hi=100_000)
        height = query_int(request, "height", 0, lo=-1, hi=100_000)
        if width <= 0 or height <= 0:
            raise invalid_param("width and height must be positive integers")
        method = request.query.get("method", "scale")
        if method not in ("crop", "scale"):
            raise invalid_param("method must be crop or scale")
        # animated=true: we make static thumbnails only, which the spec allows ("if possible").
        _bool(request, "animated", False)
        timeout_ms = query_int(request, "timeout_ms", DEFAULT_TIMEOUT_MS)
        allow_remote = _bool(request, "allow_remote", True) if legacy else True
        try:
            if legacy and not await self._repo.is_legacy_visible(
                server_name, media_id, self._freeze_after_ms
            ):
                raise MediaError(404, "M_NOT_FOUND", "Not found: use the authenticated media endpoints")
            thumb = await self._repo.thumbnail(
                server_name, media_id, width, height, method, timeout_ms=timeout_ms, allow_remote=allow_remote
            )
        except MediaError as e:
            raise _matrix(e) from None
        ext = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}
        return _serve(thumb, f"thumbnail.{ext.get(thumb.content_type, 'bin')}", thumbnail=True)

    async def thumbnail(self, request: web.Request) -> web.StreamResponse:
        await self._auth.require_user(request)
        return await self._thumbnail(request, legacy=False)

    async def legacy_thumbnail(self, request: web.Request) -> web.StreamResponse:
        return await self._thumbnail(request, legacy=True)


_UPLOAD_PATH = re.compile(r"/_matrix/media/(?:v3|r0)/upload(?:/|$)")


def is_upload(request: web.Request) -> bool:
    """The endpoints whose bodies are media uploads: streamed by their handler, up to max_upload_size."""
    return request.method in ("POST", "PUT") and _UPLOAD_PATH.match(request.path) is not None
