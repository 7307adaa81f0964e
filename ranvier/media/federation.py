"""What the federation media routes serve (ranvier.federation.media_routes): our own media only, never
media we cached from a third server, with the repository's errors as federation errors."""

from __future__ import annotations

from ..federation.media_routes import MediaPart
from ..federation.request_auth import json_error
from .errors import MediaError
from .headers import served_headers
from .repository import MediaRepository, ServedFile


def _part(file: ServedFile, filename: str | None, *, thumbnail: bool = False) -> MediaPart:
    headers = served_headers(file.content_type, filename, force_inline=thumbnail)
    return MediaPart(
        file.path,
        file.size,
        {"Content-Type": headers["Content-Type"], "Content-Disposition": headers["Content-Disposition"]},
    )


class FederationMedia:
    def __init__(self, repository: MediaRepository) -> None:
        self._repo = repository

    async def download(self, media_id: str, timeout_ms: int) -> MediaPart:
        try:
            file = await self._repo.local_file(media_id, timeout_ms)
        except MediaError as e:
            raise json_error(e.status, e.errcode, e.message) from None
        return _part(file, file.upload_name)

    async def thumbnail(
        self, media_id: str, width: int, height: int, method: str, timeout_ms: int
    ) -> MediaPart:
        try:
            thumb = await self._repo.thumbnail(
                self._repo.server_name,
                media_id,
                width,
                height,
                method,
                timeout_ms=timeout_ms,
                allow_remote=False,
            )
        except MediaError as e:
            raise json_error(e.status, e.errcode, e.message) from None
        ext = thumb.content_type.rpartition("/")[2].replace("jpeg", "jpg")
        return _part(thumb, f"thumbnail.{ext}", thumbnail=True)
