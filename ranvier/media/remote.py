"""Other servers' media, fetched for our users through the federation client (S2S "Content Repository").

``GET /_matrix/federation/v1/media/download/{mediaId}`` first (a signed request; the answer is
multipart/mixed: a JSON part, then the bytes or a ``Location`` to fetch them from). A server that answers
404 ``M_UNRECOGNIZED`` (or 400/405 ``M_UNRECOGNIZED``, or a bare 404 without a Matrix error) has no such
endpoint: then the deprecated ``/_matrix/media/v3/download/{serverName}/{mediaId}?allow_remote=false``.

Each fetch is bounded: ``max_size`` bytes (a declared Content-Length over it is refused before reading;
a stream that grows past it is cut off), and ``timeout`` seconds for the whole exchange. The bytes stream
to disk like an upload, and the media is recorded once: concurrent requests for the same media share one
fetch, and a later request is served from the cache.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from email.message import Message
from urllib.parse import quote, unquote

import aiohttp
import yarl

from ..clock import now_ms
from ..federation.client import FederationClient, FederationError, path_segment
from ..federation.ip_blocklist import BlockedAddress, BlocklistingResolver
from ..storage.protocols.media import MediaStorage
from ..storage.sql.media import RemoteMedia
from .errors import BodyTooLarge, MediaError, not_found, too_large
from .files import FileStore, StoredFile
from .headers import normalise_content_type

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_JSON_PART = 64 * 1024


def filename_from_disposition(value: str | None) -> str | None:
    """The file name of a Content-Disposition header (``filename*`` in UTF-8 preferred over ``filename``)."""
    if not value:
        return None
    msg = Message()
    msg["Content-Disposition"] = value
    star = re.search(r"filename\*\s*=\s*([^']*)'[^']*'([^;\s]+)", value, re.IGNORECASE)
    if star is not None:
        try:
            name = unquote(star.group(2), encoding=star.group(1) or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            name = None
        if name:
            return name
    plain = msg.get_param("filename", header="Content-Disposition")
    return plain if isinstance(plain, str) and plain else None


def _unrecognised(e: FederationError) -> bool:
    return e.status in (400, 404, 405) and (e.errcode in (None, "M_UNRECOGNIZED"))


class RemoteMediaFetcher:
    def __init__(
        self,
        client: FederationClient,
        store: MediaStorage,
        files: FileStore,
        *,
        max_size: int,
        timeout: float,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._client = client
        self._store = store
        self._files = files
        self.max_size = max_size
        self.timeout = timeout
        self._clock_ms = clock_ms
        self._in_flight: dict[tuple[str, str], asyncio.Task[RemoteMedia]] = {}
        self._session: aiohttp.ClientSession | None = None

    def _redirect_session(self) -> aiohttp.ClientSession:
        """For ``Location`` redirects: plain HTTP(S), through the federation IP blocklist."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=BlocklistingResolver(self._client.blocklist))
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        for task in list(self._in_flight.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, server_name: str, media_id: str) -> RemoteMedia:
        """The media, from the cache or fetched now. One fetch per media at a time, in a task of its own:
        every request for it waits on that task, and a requester that goes away does not cancel it."""
        cached = await self._store.get_remote(server_name, media_id)
        if cached is not None and self._files.exists(cached.sha256):
            return cached
        key = (server_name, media_id)
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(server_name, media_id))
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._done(key, done))
        return await asyncio.shield(task)

    def _done(self, key: tuple[str, str], task: asyncio.Task[RemoteMedia]) -> None:
        self._in_flight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved, so a failure nobody waited for is not reported as lost

    async def _fetch(self, server_name: str, media_id: str) -> RemoteMedia:
        try:
            try:
                stored, content_type, name = await self._fetch_federation(server_name, media_id)
            except FederationError as e:
                if not _unrecognised(e):
                    raise
                logger.info("%s has no federation media endpoint (%s); using the legacy one", server_name, e)
                stored, content_type, name = await self._fetch_legacy(server_name, media_id)
        except FederationError as e:
            raise self._as_media_error(e) from None
        except TimeoutError:
            raise MediaError(504, "M_UNKNOWN", f"{server_name} did not send the media in time") from None
        except (aiohttp.ClientError, ValueError) as e:
            raise MediaError(502, "M_UNKNOWN", f"Could not fetch the media from {server_name}: {e}") from None
        except BodyTooLarge:
            raise too_large(f"Remote media is larger than {self.max_size} bytes", status=502) from None
        media = RemoteMedia(
            server_name, media_id, self._clock_ms(), content_type, name, stored.size, stored.sha256, False
        )
        return await self._store.store_remote(media)

    def _as_media_error(self, e: FederationError) -> MediaError:
        if e.status == 404:
            return not_found(f"{e.destination} has no such media")
        if e.errcode == "M_TOO_LARGE":
            return too_large(f"Remote media too large: {e.message}", status=502)
        if e.status == 504 and e.errcode == "M_NOT_YET_UPLOADED":
            return MediaError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
        if e.status == 0:
            return MediaError(502, "M_UNKNOWN", f"Could not reach {e.destination}: {e.message}")
        return MediaError(502, "M_UNKNOWN", f"{e.destination} answered {e.status} {e.errcode or ''}".strip())

    async def _error_from(self, resp: aiohttp.ClientResponse, destination: str) -> FederationError:
        body = await resp.content.read(4096)
        errcode: str | None = None
        message = body[:300].decode("utf-8", "replace")
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                code, text = parsed.get("errcode"), parsed.get("error")
                errcode = code if isinstance(code, str) else None
                message = text if isinstance(text, str) else message
        except ValueError:
            pass
        return FederationError(resp.status, errcode, message, destination)

    def _check_length(self, declared: int | None) -> None:
        if declared is not None and declared > self.max_size:
            raise BodyTooLarge(self.max_size)

    async def _fetch_federation(self, server_name: str, media_id: str) -> tuple[StoredFile, str, str | None]:
        path = f"/_matrix/federation/v1/media/download/{path_segment(media_id)}"
        async with asyncio.timeout(self.timeout):
            async with self._client.stream(server_name, path, timeout=self.timeout) as resp:
                if resp.status != 200:
                    raise await self._error_from(resp, server_name)
                if not resp.content_type.startswith("multipart/"):
                    raise ValueError(f"expected multipart/mixed, got {resp.content_type}")
                reader = aiohttp.MultipartReader(resp.headers, resp.content)
                meta = await reader.next()
                if not isinstance(meta, aiohttp.BodyPartReader):
                    raise ValueError("no metadata part")
                if len(await meta.read()) > MAX_JSON_PART:
                    raise ValueError("metadata part too large")
                part = await reader.next()
                if not isinstance(part, aiohttp.BodyPartReader):
                    raise ValueError("no media part")
                location = part.headers.get("Location")
                if location:
                    return await self._fetch_location(location)
                declared = part.headers.get("Content-Length")
                self._check_length(int(declared) if declared and declared.isdigit() else None)
                content_type = normalise_content_type(part.headers.get("Content-Type"))
                name = filename_from_disposition(part.headers.get("Content-Disposition"))
                stored = await self._files.write_stream(_part_chunks(part, reader), self.max_size)
                return stored, content_type, name

    async def _fetch_location(self, location: str) -> tuple[StoredFile, str, str | None]:
        """The second part was a redirect: a plain GET (the federation client's session, so the same IP
        blocklist applies to where it points)."""
        url = yarl.URL(location)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("Location is not an http(s) URL")
        try:
            ipaddress.ip_address(url.host)
        except ValueError:
            pass  # a name: the session's resolver checks its addresses
        else:
            try:
                self._client.blocklist.check(url.host)
            except BlockedAddress as e:
                raise ValueError(f"Location not allowed: {e}") from None
        session = self._redirect_session()
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with session.get(location, timeout=timeout, allow_redirects=False) as resp:
            if resp.status != 200:
                raise FederationError(resp.status, None, "fetching the media's Location failed", location)
            self._check_length(resp.content_length)
            stored = await self._files.write_stream(_response_chunks(resp), self.max_size)
            content_type = normalise_content_type(resp.headers.get("Content-Type"))
            return stored, content_type, filename_from_disposition(resp.headers.get("Content-Disposition"))

    async def _fetch_legacy(self, server_name: str, media_id: str) -> tuple[StoredFile, str, str | None]:
        # S2S: "When falling back, servers MUST be sure to set allow_remote to false."
        # A server name's ':' (before the port) is left as it is: a valid path character.
        path = f"/_matrix/media/v3/download/{quote(server_name, safe=':')}/{path_segment(media_id)}"
        async with asyncio.timeout(self.timeout):
            async with self._client.stream(
                server_name, path, {"allow_remote": False}, timeout=self.timeout, authenticate=False
            ) as resp:
                if resp.status != 200:
                    raise await self._error_from(resp, server_name)
                self._check_length(resp.content_length)
                stored = await self._files.write_stream(_response_chunks(resp), self.max_size)
                content_type = normalise_content_type(resp.headers.get("Content-Type"))
                return (
                    stored,
                    content_type,
                    filename_from_disposition(resp.headers.get("Content-Disposition")),
                )


async def _part_chunks(part: aiohttp.BodyPartReader, reader: aiohttp.MultipartReader) -> AsyncIterator[bytes]:
    """The media part's bytes; then the answer must end with its closing boundary (exactly two parts):
    a truncated answer raises before the file is kept."""
    while True:
        chunk = await part.read_chunk(CHUNK)
        if not chunk:
            break
        yield chunk
    if await reader.next() is not None:  # a truncated answer raises ValueError here
        raise ValueError("more than two parts in the media answer")


async def _response_chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in resp.content.iter_chunked(CHUNK):
        yield chunk
