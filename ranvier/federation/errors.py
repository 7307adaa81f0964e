"""Errors that federation endpoints answer with (the room layer raises them; the routes serialise them)."""

from __future__ import annotations

from typing import Any


class FederationRequestError(Exception):
    """An error to answer a federation request with: HTTP status, errcode, message and extra fields."""

    def __init__(self, status: int, errcode: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.message, **self.extra}
