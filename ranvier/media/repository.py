"""The content repository: uploads, downloads and thumbnails, for local and remote media.

Uploads are streamed to disk (``files``) under ``max_upload_size`` and recorded in the database once
complete, so a refused or interrupted upload leaves nothing behind. A media id made by ``create`` is
pending until its ``PUT``: a download of it waits up to ``timeout_ms`` (capped) for the upload, then
answers 504 ``M_NOT_YET_UPLOADED``. Thumbnails are made on first request at one of the configured sizes
and kept, keyed by the content they came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..clock import now_ms
from ..storage.protocols.media import MediaStorage
from ..storage.sql.media import RemoteMedia, Thumbnail
from .errors import BodyTooLarge, MediaError, not_found, too_large
from .files import FileStore, StoredFile
from .headers import essence, normalise_content_type
from .thumbnailer import CannotThumbnail, ImageTooLarge, Thumbnailer, choose_size

logger = logging.getLogger(__name__)

EXPIRY_SWEEP_INTERVAL_MS = 3600 * 1000
MEDIA_ID_BYTES = 18  # 24 characters of URL-safe base64: A-Z a-z 0-9 - _ only, as the spec requires


@dataclass(frozen=True, slots=True)
class ServedFile:
    path: Path
    content_type: str
    upload_name: str | None
    size: int
    sha256: str


class RemoteFetcher(Protocol):
    async def fetch(self, server_name: str, media_id: str) -> RemoteMedia: ...


@dataclass(frozen=True)
class MediaLimits:
    max_upload_size: int
    max_pending_uploads: int = 10
    unused_expiry_ms: int = 24 * 3600 * 1000  # CS "create": the recommended 24 hours
    max_wait_ms: int = 60_000  # the cap on a download's timeout_ms
    # Other servers' media kept here, in bytes: past it the earliest fetched are forgotten (fetched again
    # when asked for). None: no bound.
    max_remote_cache_bytes: int | None = None
    # Bytes each user may have uploaded in all (CS "Security considerations": 403 M_FORBIDDEN past it).
    # None: no quota.
    max_user_storage_bytes: int | None = None


class MediaRepository:
    def __init__(
        self,
        store: MediaStorage,
        files: FileStore,
        thumbnailer: Thumbnailer,
        server_name: str,
        limits: MediaLimits,
        *,
        remote: RemoteFetcher | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.files = files
        self.thumbnailer = thumbnailer
        self.server_name = server_name
        self.limits = limits
        self.remote = remote
        self._clock_ms = clock_ms
        self._uploaded: dict[str, asyncio.Event] = {}  # created media ids someone waits for
        # Per thumbnail being made: its lock and how many requests hold or wait for it.
        self._thumbnail_locks: dict[tuple[str, int, int, str], tuple[asyncio.Lock, int]] = {}
        self._last_expiry_sweep = 0

    @staticmethod
    def new_media_id() -> str:
        return secrets.token_urlsafe(MEDIA_ID_BYTES)

    def mxc(self, media_id: str) -> str:
        return f"mxc://{self.server_name}/{media_id}"

    # -- uploads -------------------------------------------------------------------------------------

    async def check_quota(self, user_id: str, incoming: int | None) -> None:
        """403 M_FORBIDDEN when ``incoming`` more bytes would take the user past the storage quota."""
        quota = self.limits.max_user_storage_bytes
        if quota is None:
            return
        used = await self.store.user_storage(user_id)
        if used + (incoming or 0) > quota:
            raise MediaError(
                403,
                "M_FORBIDDEN",
                f"Upload quota exceeded: {used} of {quota} bytes used, {incoming or 0} more",
            )

    async def _within_quota(self, user_id: str, stored: StoredFile) -> None:
        """After the body: the real size against the quota (a chunked body declares none)."""
        try:
            await self.check_quota(user_id, stored.size)
        except MediaError:
            await self._delete_file_if_unused(stored.sha256)
            raise

    async def _write(self, chunks: AsyncIterator[bytes]) -> StoredFile:
        try:
            return await self.files.write_stream(chunks, self.limits.max_upload_size)
        except BodyTooLarge:
            raise too_large(f"Cannot upload files larger than {self.limits.max_upload_size} bytes") from None

    async def upload(
        self, user_id: str, chunks: AsyncIterator[bytes], content_type: str | None, upload_name: str | None
    ) -> str:
        """``POST /upload``: store the bytes and return the new ``mxc://`` URI."""
        stored = await self._write(chunks)
        await self._within_quota(user_id, stored)
        media_id = self.new_media_id()
        await self.store.store_local(
            media_id,
            user_id,
            self._clock_ms(),
            normalise_content_type(content_type),
            upload_name,
            stored.size,
            stored.sha256,
        )
        return self.mxc(media_id)

    async def record_file(self, user_id: str, stored: StoredFile, content_type: str | None) -> str:
        """A file already written to the store (a URL preview's image) as a new local media."""
        media_id = self.new_media_id()
        await self.store.store_local(
            media_id,
            user_id,
            self._clock_ms(),
            normalise_content_type(content_type),
            None,
            stored.size,
            stored.sha256,
        )
        return self.mxc(media_id)

    async def create(self, user_id: str) -> tuple[str, int]:
        """``POST /create``: a new media id (and when it lapses unused). 429 past the pending limit."""
        now = self._clock_ms()
        if await self.store.count_pending(user_id, now) >= self.limits.max_pending_uploads:
            raise MediaError(
                429,
                "M_LIMIT_EXCEEDED",
                f"At most {self.limits.max_pending_uploads} created media ids may wait for their upload",
                retry_after_ms=60_000,
            )
        if now - self._last_expiry_sweep > EXPIRY_SWEEP_INTERVAL_MS:
            # Created ids never uploaded are forgotten once they lapse (checked at most once an hour).
            self._last_expiry_sweep = now
            await self.store.delete_expired_pending(now)
        media_id = self.new_media_id()
        expires = now + self.limits.unused_expiry_ms
        await self.store.create_pending(media_id, user_id, now, expires)
        return self.mxc(media_id), expires

    async def check_upload_to(self, user_id: str, server_name: str, media_id: str) -> None:
        """Whether ``PUT /upload/{serverName}/{mediaId}`` may proceed: checked before the body is read."""
        if server_name != self.server_name:
            raise not_found("Unknown media ID: not created on this server")
        row = await self.store.get_local(media_id)
        if row is None or (
            not row.uploaded
            and row.unused_expires_at is not None
            and row.unused_expires_at <= self._clock_ms()
        ):
            raise not_found("Unknown media ID (never created, or expired)")
        if row.user_id != user_id:
            raise MediaError(403, "M_FORBIDDEN", "This media ID was created by another user")
        if row.uploaded:
            raise MediaError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")

    async def upload_to(
        self,
        user_id: str,
        server_name: str,
        media_id: str,
        chunks: AsyncIterator[bytes],
        content_type: str | None,
        upload_name: str | None,
    ) -> None:
        await self.check_upload_to(user_id, server_name, media_id)
        stored = await self._write(chunks)
        await self._within_quota(user_id, stored)
        done = await self.store.complete_pending(
            media_id,
            self._clock_ms(),
            normalise_content_type(content_type),
            upload_name,
            stored.size,
            stored.sha256,
        )
        if not done:
            await self._delete_file_if_unused(stored.sha256)
            raise MediaError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        event = self._uploaded.pop(media_id, None)
        if event is not None:
            event.set()

    async def _delete_file_if_unused(self, sha256: str) -> None:
        """Once no media is these bytes: forget the thumbnails made from them, then delete every file of
        those that nothing else uses (a thumbnail may be the source itself, or equal to another file)."""
        if await self.store.sha256_in_use(sha256, thumbnails=False):
            return
        thumbs = await self.store.delete_thumbnails_of(sha256)
        for sha in {sha256, *thumbs}:
            if not await self.store.sha256_in_use(sha):
                await self.files.delete(sha)

    async def _bound_remote_cache(self, keep: tuple[str, str]) -> None:
        """Forget the earliest fetched remote media until the cache is within its bound (never ``keep``,
        the one being served)."""
        cap = self.limits.max_remote_cache_bytes
        if cap is None:
            return
        total = await self.store.remote_cache_size()
        while total > cap:
            victims = [m for m in await self.store.oldest_remote(20) if (m.server_name, m.media_id) != keep]
            if not victims:
                return
            for media in victims:
                await self.store.delete_remote(media.server_name, media.media_id)
                await self._delete_file_if_unused(media.sha256)
                total -= media.size
                if total <= cap:
                    return

    async def purge_remote_cache(self, before_ts: int) -> int:
        """Forget the remote media fetched before ``before_ts`` and delete their files once unused (the
        admin API's purge_media_cache); they are fetched again when asked for. Returns how many."""
        deleted = 0
        while True:
            batch = await self.store.remote_fetched_before(before_ts, 100)
            if not batch:
                return deleted
            for media in batch:
                await self.store.delete_remote(media.server_name, media.media_id)
                await self._delete_file_if_unused(media.sha256)
                deleted += 1

    async def delete_local(self, media_id: str) -> bool:
        """Remove a local media id, and its file when nothing else uses it (for the admin API)."""
        if await self.store.get_local(media_id) is None:
            return False
        sha = await self.store.delete_local(media_id)
        if sha is not None:
            await self._delete_file_if_unused(sha)
        return True

    # -- downloads -----------------------------------------------------------------------------------

    async def local_file(self, media_id: str, timeout_ms: int) -> ServedFile:
        """A local media's file; waits (bounded) for one that was created but not yet uploaded."""
        row = await self.store.get_local(media_id)
        if row is not None and not row.uploaded:
            expired = row.unused_expires_at is not None and row.unused_expires_at <= self._clock_ms()
            if expired:
                raise not_found()
            wait = max(0, min(timeout_ms, self.limits.max_wait_ms)) / 1000
            event = self._uploaded.setdefault(media_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), wait)
            if not event.is_set() and self._uploaded.get(media_id) is event:
                del self._uploaded[media_id]
            row = await self.store.get_local(media_id)
            if row is not None and not row.uploaded:
                raise MediaError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
        if row is None or row.quarantined or row.sha256 is None:
            raise not_found()
        path = self.files.path_for(row.sha256)
        if not path.is_file():
            logger.error("media %s: its file %s is missing", media_id, row.sha256)
            raise not_found()
        return ServedFile(
            path,
            row.content_type or "application/octet-stream",
            row.upload_name,
            row.size or 0,
            row.sha256,
        )

    async def remote_file(self, server_name: str, media_id: str) -> ServedFile:
        cached = await self.store.get_remote(server_name, media_id)
        if cached is None or not self.files.exists(cached.sha256):
            if self.remote is None:
                raise not_found("Remote media is not available: federation is off")
            cached = await self.remote.fetch(server_name, media_id)
            await self._bound_remote_cache(keep=(server_name, media_id))
        if cached.quarantined:
            raise not_found()
        return ServedFile(
            self.files.path_for(cached.sha256),
            cached.content_type or "application/octet-stream",
            cached.upload_name,
            cached.size,
            cached.sha256,
        )

    async def file(
        self, server_name: str, media_id: str, *, timeout_ms: int, allow_remote: bool
    ) -> ServedFile:
        if server_name == self.server_name:
            return await self.local_file(media_id, timeout_ms)
        if not allow_remote:
            raise not_found("Remote media not fetched: allow_remote is false")
        return await self.remote_file(server_name, media_id)

    async def is_legacy_visible(self, server_name: str, media_id: str, freeze_after_ms: int | None) -> bool:
        """Under the v1.12 freeze, the unauthenticated endpoints serve only media stored before it."""
        if freeze_after_ms is None:
            return True
        if server_name == self.server_name:
            row = await self.store.get_local(media_id)
            return row is not None and row.created_ts < freeze_after_ms
        cached = await self.store.get_remote(server_name, media_id)
        return cached is not None and cached.fetched_ts < freeze_after_ms

    # -- thumbnails ----------------------------------------------------------------------------------

    async def thumbnail(
        self,
        server_name: str,
        media_id: str,
        width: int,
        height: int,
        method: str,
        *,
        timeout_ms: int,
        allow_remote: bool,
    ) -> ServedFile:
        source = await self.file(server_name, media_id, timeout_ms=timeout_ms, allow_remote=allow_remote)
        remote = server_name != self.server_name
        if essence(source.content_type) == "image/svg+xml":
            # SVG can carry script and has no bounded decoding cost: never thumbnailed.
            raise MediaError(400, "M_UNKNOWN", "Cannot generate thumbnails for SVG images")
        box_w, box_h, box_method = choose_size(width, height, method, self.thumbnailer.sizes)
        key = (source.sha256, box_w, box_h, box_method)
        lock, users = self._thumbnail_locks.get(key, (asyncio.Lock(), 0))
        self._thumbnail_locks[key] = (lock, users + 1)
        try:
            async with lock:  # one rendering per thumbnail, however many ask at once
                thumb = await self.store.get_thumbnail(*key)
                if thumb is None:
                    thumb = await self._render(source, box_w, box_h, box_method, remote)
        finally:
            lock, users = self._thumbnail_locks[key]
            if users == 1:
                del self._thumbnail_locks[key]
            else:
                self._thumbnail_locks[key] = (lock, users - 1)
        return ServedFile(
            self.files.path_for(thumb.sha256), thumb.content_type, "thumbnail", thumb.size, thumb.sha256
        )

    async def _render(
        self, source: ServedFile, width: int, height: int, method: str, remote: bool
    ) -> Thumbnail:
        try:
            made = await self.thumbnailer.make(source.path, width, height, method)
            info = await self.thumbnailer.probe(source.path)
        except ImageTooLarge as e:
            # CS "Security considerations": 413 for local content, 502 for remote.
            raise too_large(f"Content is too large to thumbnail: {e}", 502 if remote else 413) from None
        except CannotThumbnail as e:
            raise MediaError(400, "M_UNKNOWN", f"Cannot generate thumbnails for this content: {e}") from None
        if made is None:
            # The image fits the box already: the original is served (never upscaled), as its real type.
            thumb = Thumbnail(
                source.sha256,
                width,
                height,
                method,
                info.content_type,
                info.width,
                info.height,
                source.size,
                source.sha256,
            )
        else:
            stored = await self.files.write_bytes(made.data)
            thumb = Thumbnail(
                source.sha256,
                width,
                height,
                method,
                made.content_type,
                made.width,
                made.height,
                stored.size,
                stored.sha256,
            )
        await self.store.store_thumbnail(thumb)
        return thumb
