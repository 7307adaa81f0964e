"""Media bytes on disk, content-addressed: ``<root>/content/ab/cd/abcd...`` (the sha256 of the bytes).

A file is written to ``<root>/tmp/`` chunk by chunk while its hash is computed, then renamed into place:
a reader never sees a partial file, identical uploads share one file, and memory holds one chunk at a time
however big the upload. Disk writes run in a worker thread (asyncio.to_thread), a megabyte at a time, so
a slow disk does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from .errors import BodyTooLarge

_SHA256 = re.compile(r"[0-9a-f]{64}")
WRITE_BATCH = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredFile:
    sha256: str
    size: int


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._content = root / "content"
        self._tmp = root / "tmp"

    def prepare(self) -> None:
        """Create the directories and remove temporary files left by a crash mid-upload."""
        self._content.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def path_for(self, sha256: str) -> Path:
        if _SHA256.fullmatch(sha256) is None:
            raise ValueError(f"not a sha256: {sha256!r}")
        return self._content / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    async def write_stream(self, chunks: AsyncIterator[bytes], limit: int) -> StoredFile:
        """Store the bytes of ``chunks``; ``BodyTooLarge`` (and nothing kept) past ``limit`` bytes."""
        tmp = self._tmp / f"{secrets.token_hex(16)}.part"
        digest = hashlib.sha256()
        size = 0
        pending: list[bytes] = []
        pending_size = 0
        fd = await asyncio.to_thread(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit)
                digest.update(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= WRITE_BATCH:
                    await asyncio.to_thread(_write_all, fd, pending)
                    pending, pending_size = [], 0
            if pending:
                await asyncio.to_thread(_write_all, fd, pending)
            await asyncio.to_thread(os.fsync, fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        sha = digest.hexdigest()
        await asyncio.to_thread(self._place, tmp, sha)
        return StoredFile(sha, size)

    async def write_bytes(self, data: bytes) -> StoredFile:
        """Store a small blob (a thumbnail)."""

        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.write_stream(one(), len(data))

    def _place(self, tmp: Path, sha256: str) -> None:
        target = self.path_for(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            tmp.unlink(missing_ok=True)  # the same bytes are already stored
            return
        os.replace(tmp, target)

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(self.path_for(sha256).unlink, True)


def _write_all(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            written = os.write(fd, view)
            view = view[written:]
