"""URL previews (CS ``GET /_matrix/client/v1/media/preview_url``): OpenGraph data of a web page, its image
stored as our own media. Off unless configured (``media.url_preview.enabled``).

Fetching arbitrary URLs for users is a way into internal networks, so every connection goes through an
IP blocklist (ranvier.federation.ip_blocklist): loopback, private, link-local and every other address that
is not globally routable are refused unless an operator allows a range back, and so are the addresses a
name resolves to and every redirect's target (redirects are followed by hand, at most ``MAX_REDIRECTS``).
A page is read up to ``max_bytes`` (a longer one is refused, 502 ``M_TOO_LARGE``) within ``timeout``
seconds, at most ``MAX_CONCURRENT`` at once; answers are cached for an hour.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from typing import Any

import aiohttp
import yarl

from ..federation.ip_blocklist import BlockedAddress, BlocklistingResolver, IpBlocklist
from .errors import BodyTooLarge, MediaError
from .files import FileStore, StoredFile

MAX_REDIRECTS = 5
MAX_CONCURRENT = 8
CACHE_SECONDS = 3600
CACHE_ENTRIES = 1000
MAX_OG_VALUE = 1000
_OG_KEY = re.compile(r"(og|twitter|article|profile|book|music|video):[A-Za-z0-9_:.-]{1,64}")


class _OpenGraph(HTMLParser):
    """``<meta property="og:...">`` (and ``name=``), ``<title>`` and ``<meta name="description">``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.title: str | None = None
        self.description: str | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v for k, v in attrs if v is not None}
        if tag == "meta":
            key = a.get("property") or a.get("name")
            content = a.get("content")
            if key is None or content is None:
                return
            if _OG_KEY.fullmatch(key) and key not in self.og:
                self.og[key] = content[:MAX_OG_VALUE]
            elif key.lower() == "description" and self.description is None:
                self.description = content[:MAX_OG_VALUE]
        elif tag == "title" and self.title is None:
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = ((self.title or "") + data)[:MAX_OG_VALUE]


def parse_open_graph(html: str) -> dict[str, Any]:
    parser = _OpenGraph()
    parser.feed(html)
    parser.close()
    result: dict[str, Any] = dict(parser.og)
    if "og:title" not in result and parser.title and parser.title.strip():
        result["og:title"] = parser.title.strip()
    if "og:description" not in result and parser.description:
        result["og:description"] = parser.description
    return result


def _charset(content_type: str, body: bytes) -> str:
    """The page's encoding: from its Content-Type, else a ``<meta charset>``, else UTF-8."""
    m = re.search(r"charset=[\"']?([A-Za-z0-9_.:-]+)", content_type, re.IGNORECASE)
    if m is not None:
        return m.group(1)
    b = re.search(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_.:-]+)", body[:4096], re.IGNORECASE)
    return b.group(1).decode("ascii") if b is not None else "utf-8"


def _blocked(e: BaseException) -> bool:
    """aiohttp wraps the resolver's BlockedAddress in its own connection errors."""
    seen: BaseException | None = e
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, BlockedAddress) or isinstance(getattr(seen, "os_error", None), BlockedAddress):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class UrlPreviewer:
    def __init__(
        self,
        files: FileStore,
        store_image: Callable[[str, StoredFile, str], Awaitable[str]],
        *,
        blocklist: IpBlocklist,
        max_bytes: int,
        timeout: float,
        max_image_bytes: int,
    ) -> None:
        """``store_image(user_id, stored_file, content_type) -> mxc`` records a fetched image as media."""
        self._files = files
        self._store_image = store_image
        self._blocklist = blocklist
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_image_bytes = max_image_bytes
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=BlocklistingResolver(self._blocklist), limit=32)
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": "Ranvier URL preview"}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _check_url(self, url: yarl.URL) -> None:
        if url.scheme not in ("http", "https") or not url.host:
            raise MediaError(400, "M_INVALID_PARAM", "Only http and https URLs can be previewed")
        try:
            ipaddress.ip_address(url.host)
        except ValueError:
            return  # a name: its addresses are checked by the resolver
        if self._blocklist.is_blocked(url.host):
            raise MediaError(403, "M_FORBIDDEN", "URL previews of this address are not allowed")

    async def preview(self, user_id: str, raw_url: str) -> dict[str, Any]:
        cached = self._cache.get(raw_url)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            url = yarl.URL(raw_url)
        except ValueError:
            raise MediaError(400, "M_INVALID_PARAM", "Not a valid URL") from None
        self._check_url(url)
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout):
                    result = await self._preview(user_id, url)
            except TimeoutError:
                raise MediaError(
                    504, "M_UNKNOWN", f"The page did not answer within {self.timeout}s"
                ) from None
            except BlockedAddress:
                raise MediaError(403, "M_FORBIDDEN", "URL previews of this address are not allowed") from None
            except BodyTooLarge:
                raise MediaError(502, "M_TOO_LARGE", "The page is too large to preview") from None
            except (aiohttp.ClientError, OSError, UnicodeError, ValueError) as e:
                if _blocked(e):  # the resolver refused every address of the name
                    raise MediaError(
                        403, "M_FORBIDDEN", "URL previews of this address are not allowed"
                    ) from None
                raise MediaError(502, "M_UNKNOWN", f"Could not fetch the page: {type(e).__name__}") from None
        self._cache[raw_url] = (time.monotonic(), result)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return result

    @asynccontextmanager
    async def _get(self, url: yarl.URL) -> AsyncIterator[tuple[aiohttp.ClientResponse, yarl.URL]]:
        """GET with redirects followed by hand, each target checked like the first."""
        session = self._get_session()
        for _ in range(MAX_REDIRECTS + 1):
            self._check_url(url)
            async with session.get(url, allow_redirects=False) as resp:
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                    url = url.join(yarl.URL(resp.headers["Location"]))
                    continue
                yield resp, url
                return
        raise MediaError(502, "M_UNKNOWN", "Too many redirects")

    async def _read(self, resp: aiohttp.ClientResponse, limit: int) -> bytes:
        if resp.content_length is not None and resp.content_length > limit:
            raise BodyTooLarge(limit)
        chunks, size = [], 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _preview(self, user_id: str, url: yarl.URL) -> dict[str, Any]:
        async with self._get(url) as (resp, final):
            if resp.status != 200:
                raise MediaError(502, "M_UNKNOWN", f"The page answered {resp.status}")
            content_type = resp.headers.get("Content-Type", "")
            if content_type.lower().startswith("image/"):
                return await self._image_result(user_id, resp, content_type)
            if not re.match(r"(text/html|application/xhtml\+xml)", content_type, re.IGNORECASE):
                return {}
            body = await self._read(resp, self.max_bytes)
        try:
            html = body.decode(_charset(content_type, body), errors="replace")
        except LookupError:  # an encoding Python does not know
            html = body.decode("utf-8", errors="replace")
        result = parse_open_graph(html)
        image = result.pop("og:image", None)
        if isinstance(image, str) and image:
            try:
                async with self._get(final.join(yarl.URL(image))) as (img, _img_url):
                    img_type = img.headers.get("Content-Type", "")
                    if img.status == 200 and img_type.lower().startswith("image/"):
                        result.update(await self._image_result(user_id, img, img_type))
            except (MediaError, BodyTooLarge, BlockedAddress, aiohttp.ClientError, OSError, ValueError):
                pass  # a preview without its image
        return result

    async def _image_result(
        self, user_id: str, resp: aiohttp.ClientResponse, content_type: str
    ) -> dict[str, Any]:
        if resp.content_length is not None and resp.content_length > self.max_image_bytes:
            raise BodyTooLarge(self.max_image_bytes)

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in resp.content.iter_chunked(64 * 1024):
                yield chunk

        stored = await self._files.write_stream(chunks(), self.max_image_bytes)
        mxc = await self._store_image(user_id, stored, content_type)
        return {"og:image": mxc, "og:image:type": content_type, "matrix:image:size": stored.size}
