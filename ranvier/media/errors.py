"""Errors of the content repository, turned into Matrix errors at the HTTP edges."""

from __future__ import annotations


class MediaError(Exception):
    """A request the repository refuses: HTTP status, errcode and a message for the user."""

    def __init__(self, status: int, errcode: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message
        self.extra = extra


def not_found(message: str = "Media not found") -> MediaError:
    return MediaError(404, "M_NOT_FOUND", message)


def too_large(message: str, status: int = 413) -> MediaError:
    return MediaError(status, "M_TOO_LARGE", message)


class BodyTooLarge(Exception):
    """A streamed body went past the size limit (the partial file is already deleted)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit
