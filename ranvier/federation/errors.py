"""Errors that federation endpoints answer with (the room layer raises them; the routes serialise them).

``FederationRequestError`` carries its own status; the ``ProtocolError`` kinds below carry an errcode, which
the routes map to a status (``routes._STATUS``).
"""

from __future__ import annotations

from typing import Any

from ..protocol.errors import ProtocolError


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


class BadRequest(ProtocolError):
    errcode = "M_BAD_JSON"


class MissingParam(ProtocolError):
    errcode = "M_MISSING_PARAM"


class InvalidParam(ProtocolError):
    errcode = "M_INVALID_PARAM"


class NotFound(ProtocolError):
    errcode = "M_NOT_FOUND"


class Forbidden(ProtocolError):
    errcode = "M_FORBIDDEN"
