"""The content repository's metadata (migration 300): local media (with the pending rows of
``POST /_matrix/media/v1/create``), the cache of remote media, and thumbnails. The bytes are files named by
their sha256 (ranvier.media.files); these rows say which media id is which file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .engine import Database, Row

_LOCAL_COLUMNS = (
    "media_id, user_id, created_ts, unused_expires_at, uploaded_ts, content_type, upload_name, size, sha256,"
    " quarantined"
)
_REMOTE_COLUMNS = "server_name, media_id, fetched_ts, content_type, upload_name, size, sha256, quarantined"


@dataclass(frozen=True, slots=True)
class LocalMedia:
    media_id: str
    user_id: str
    created_ts: int
    unused_expires_at: int | None
    uploaded_ts: int | None
    content_type: str | None
    upload_name: str | None
    size: int | None
    sha256: str | None  # None while a created media id waits for its upload
    quarantined: bool

    @property
    def uploaded(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True, slots=True)
class RemoteMedia:
    server_name: str
    media_id: str
    fetched_ts: int
    content_type: str | None
    upload_name: str | None
    size: int
    sha256: str
    quarantined: bool


@dataclass(frozen=True, slots=True)
class Thumbnail:
    source_sha256: str
    width: int  # the size asked for (one of the configured sizes)
    height: int
    method: str
    content_type: str
    thumb_width: int  # the size made
    thumb_height: int
    size: int
    sha256: str


def _local(row: Row) -> LocalMedia:
    return LocalMedia(
        row[0], row[1], int(row[2]), row[3], row[4], row[5], row[6], row[7], row[8], bool(row[9])
    )


def _remote(row: Row) -> RemoteMedia:
    return RemoteMedia(row[0], row[1], int(row[2]), row[3], row[4], int(row[5]), row[6], bool(row[7]))


# An mxc URI inside event JSON: a server name (host, IP literal, port) and a media id.
_MXC = re.compile(r"mxc://([A-Za-z0-9.:\[\]-]{1,255})/([A-Za-z0-9_-]{1,255})")


class MediaExists(Exception):
    """The media id is already taken (ids are random: a collision means a bug or a replay)."""


class MediaStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- local media ---------------------------------------------------------------------------------

    async def create_pending(self, media_id: str, user_id: str, now_ms: int, expires_at: int) -> None:
        """A media id handed out by ``/create``, without content until its upload."""
        async with self._db.transaction() as txn:
            if await txn.fetchval("SELECT 1 FROM local_media WHERE media_id = ?", (media_id,)):
                raise MediaExists(media_id)
            await txn.execute(
                "INSERT INTO local_media (media_id, user_id, created_ts, unused_expires_at, quarantined)"
                " VALUES (?, ?, ?, ?, 0)",
                (media_id, user_id, now_ms, expires_at),
            )

    async def count_pending(self, user_id: str, now_ms: int) -> int:
        return int(
            await self._db.fetchval(
                "SELECT COUNT(*) FROM local_media WHERE user_id = ? AND sha256 IS NULL"
                " AND unused_expires_at > ?",
                (user_id, now_ms),
            )
        )

    async def store_local(
        self,
        media_id: str,
        user_id: str,
        now_ms: int,
        content_type: str,
        upload_name: str | None,
        size: int,
        sha256: str,
    ) -> None:
        """A complete upload (``POST /upload``): the file is already on disk."""
        async with self._db.transaction() as txn:
            if await txn.fetchval("SELECT 1 FROM local_media WHERE media_id = ?", (media_id,)):
                raise MediaExists(media_id)
            await txn.execute(
                f"INSERT INTO local_media ({_LOCAL_COLUMNS}) VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, 0)",
                (media_id, user_id, now_ms, now_ms, content_type, upload_name, size, sha256),
            )

    async def complete_pending(
        self,
        media_id: str,
        now_ms: int,
        content_type: str,
        upload_name: str | None,
        size: int,
        sha256: str,
    ) -> bool:
        """Fill a created media id with its content; False when it already had some (never overwritten)."""
        async with self._db.transaction() as txn:
            done = await txn.fetchval(
                "SELECT sha256 FROM local_media WHERE media_id = ? AND sha256 IS NOT NULL", (media_id,)
            )
            if done is not None:
                return False
            await txn.execute(
                "UPDATE local_media SET uploaded_ts = ?, content_type = ?, upload_name = ?, size = ?,"
                " sha256 = ? WHERE media_id = ? AND sha256 IS NULL",
                (now_ms, content_type, upload_name, size, sha256, media_id),
            )
        return True

    async def get_local(self, media_id: str) -> LocalMedia | None:
        row = await self._db.fetchone(
            f"SELECT {_LOCAL_COLUMNS} FROM local_media WHERE media_id = ?", (media_id,)
        )
        return None if row is None else _local(row)

    async def user_storage(self, user_id: str) -> int:
        """Bytes of the user's uploads (identical files counted each time: a quota counts what was sent)."""
        return int(
            await self._db.fetchval(
                "SELECT COALESCE(SUM(size), 0) FROM local_media WHERE user_id = ?", (user_id,)
            )
        )

    async def local_media_of_user(self, user_id: str) -> list[LocalMedia]:
        rows = await self._db.fetchall(
            f"SELECT {_LOCAL_COLUMNS} FROM local_media WHERE user_id = ? ORDER BY created_ts", (user_id,)
        )
        return [_local(r) for r in rows]

    async def set_local_quarantined(self, media_id: str, quarantined: bool) -> None:
        await self._db.execute(
            "UPDATE local_media SET quarantined = ? WHERE media_id = ?", (int(quarantined), media_id)
        )

    async def delete_local(self, media_id: str) -> str | None:
        """Forget a local media id; returns the sha256 of its file (for the caller to delete if unused)."""
        async with self._db.transaction() as txn:
            sha = await txn.fetchval("SELECT sha256 FROM local_media WHERE media_id = ?", (media_id,))
            await txn.execute("DELETE FROM local_media WHERE media_id = ?", (media_id,))
        return sha if isinstance(sha, str) else None

    async def delete_expired_pending(self, now_ms: int) -> int:
        async with self._db.transaction() as txn:
            n = await txn.fetchval(
                "SELECT COUNT(*) FROM local_media WHERE sha256 IS NULL AND unused_expires_at <= ?", (now_ms,)
            )
            await txn.execute(
                "DELETE FROM local_media WHERE sha256 IS NULL AND unused_expires_at <= ?", (now_ms,)
            )
        return int(n)

    # -- remote media --------------------------------------------------------------------------------

    async def get_remote(self, server_name: str, media_id: str) -> RemoteMedia | None:
        row = await self._db.fetchone(
            f"SELECT {_REMOTE_COLUMNS} FROM remote_media WHERE server_name = ? AND media_id = ?",
            (server_name, media_id),
        )
        return None if row is None else _remote(row)

    async def store_remote(self, media: RemoteMedia) -> RemoteMedia:
        """Record a fetched remote media; when another fetch stored it first, that row wins (returned)."""
        async with self._db.transaction() as txn:
            row = await txn.fetchone(
                f"SELECT {_REMOTE_COLUMNS} FROM remote_media WHERE server_name = ? AND media_id = ?",
                (media.server_name, media.media_id),
            )
            if row is not None:
                return _remote(row)
            await txn.execute(
                f"INSERT INTO remote_media ({_REMOTE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    media.server_name,
                    media.media_id,
                    media.fetched_ts,
                    media.content_type,
                    media.upload_name,
                    media.size,
                    media.sha256,
                    int(media.quarantined),
                ),
            )
        return media

    async def remote_cache_size(self) -> int:
        return int(await self._db.fetchval("SELECT COALESCE(SUM(size), 0) FROM remote_media"))

    async def oldest_remote(self, limit: int) -> list[RemoteMedia]:
        rows = await self._db.fetchall(
            f"SELECT {_REMOTE_COLUMNS} FROM remote_media ORDER BY fetched_ts, server_name, media_id LIMIT ?",
            (limit,),
        )
        return [_remote(r) for r in rows]

    async def remote_fetched_before(self, before_ts: int, limit: int) -> list[RemoteMedia]:
        """Cached remote media fetched before ``before_ts`` (quarantined ones are kept), oldest first."""
        rows = await self._db.fetchall(
            f"SELECT {_REMOTE_COLUMNS} FROM remote_media WHERE fetched_ts < ? AND quarantined = 0"
            " ORDER BY fetched_ts, server_name, media_id LIMIT ?",
            (before_ts, limit),
        )
        return [_remote(r) for r in rows]

    async def delete_remote(self, server_name: str, media_id: str) -> None:
        await self._db.execute(
            "DELETE FROM remote_media WHERE server_name = ? AND media_id = ?", (server_name, media_id)
        )

    async def set_remote_quarantined(self, server_name: str, media_id: str, quarantined: bool) -> None:
        await self._db.execute(
            "UPDATE remote_media SET quarantined = ? WHERE server_name = ? AND media_id = ?",
            (int(quarantined), server_name, media_id),
        )

    # -- rooms ---------------------------------------------------------------------------------------

    async def media_cited_in_room(self, room_id: str, page: int = 1000) -> set[tuple[str, str]]:
        """(server name, media id) of every ``mxc://`` URI in the room's stored events (their JSON as
        received, so a redacted event's media counts too), for the admin API. Reads the room in pages."""
        found: set[tuple[str, str]] = set()
        after = -(2**62)
        while True:
            rows = await self._db.fetchall(
                "SELECT stream_ordering, json FROM events WHERE room_id = ? AND stream_ordering > ?"
                " ORDER BY stream_ordering LIMIT ?",
                (room_id, after, page),
            )
            for _, text in rows:
                found.update(_MXC.findall(text))
            if len(rows) < page:
                return found
            after = int(rows[-1][0])

    # -- files and thumbnails ------------------------------------------------------------------------

    async def sha256_in_use(self, sha256: str, *, thumbnails: bool = True) -> bool:
        """Whether a media (local or remote), or with ``thumbnails`` a thumbnail's file, is these bytes."""
        queries = [
            "SELECT 1 FROM local_media WHERE sha256 = ?",
            "SELECT 1 FROM remote_media WHERE sha256 = ?",
        ]
        if thumbnails:
            queries.append("SELECT 1 FROM media_thumbnails WHERE sha256 = ?")
        for sql in queries:
            if await self._db.fetchval(sql, (sha256,)):
                return True
        return False

    async def delete_thumbnails_of(self, source_sha256: str) -> list[str]:
        """Forget the thumbnails made from these bytes; returns their files' sha256s."""
        async with self._db.transaction() as txn:
            rows = await txn.fetchall(
                "SELECT sha256 FROM media_thumbnails WHERE source_sha256 = ?", (source_sha256,)
            )
            await txn.execute("DELETE FROM media_thumbnails WHERE source_sha256 = ?", (source_sha256,))
        return [r[0] for r in rows]

    async def get_thumbnail(
        self, source_sha256: str, width: int, height: int, method: str
    ) -> Thumbnail | None:
        row = await self._db.fetchone(
            "SELECT source_sha256, width, height, method, content_type, thumb_width, thumb_height, size,"
            " sha256 FROM media_thumbnails WHERE source_sha256 = ? AND width = ? AND height = ?"
            " AND method = ?",
            (source_sha256, width, height, method),
        )
        if row is None:
            return None
        return Thumbnail(row[0], row[1], row[2], row[3], row[4], row[5], row[6], int(row[7]), row[8])

    async def store_thumbnail(self, thumb: Thumbnail) -> None:
        async with self._db.transaction() as txn:
            exists = await txn.fetchval(
                "SELECT 1 FROM media_thumbnails WHERE source_sha256 = ? AND width = ? AND height = ?"
                " AND method = ?",
                (thumb.source_sha256, thumb.width, thumb.height, thumb.method),
            )
            if exists:
                return
            await txn.execute(
                "INSERT INTO media_thumbnails (source_sha256, width, height, method, content_type,"
                " thumb_width, thumb_height, size, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    thumb.source_sha256,
                    thumb.width,
                    thumb.height,
                    thumb.method,
                    thumb.content_type,
                    thumb.thumb_width,
                    thumb.thumb_height,
                    thumb.size,
                    thumb.sha256,
                ),
            )
