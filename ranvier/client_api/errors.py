"""Matrix errors at the HTTP edge: exceptions to ``{"errcode", "error"}`` responses with the right status.

The core raises typed errors (ranvier.protocol.errors); only here do they become HTTP statuses.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..protocol.errors import (
    AuthRejected,
    CanonicalJsonError,
    EventTooLarge,
    FormatError,
    ProtocolError,
    UnsupportedRoomVersion,
)

logger = logging.getLogger(__name__)


class MatrixError(Exception):
    """An error the client API answers with: HTTP status + errcode + message (+ extra fields)."""

    def __init__(self, status: int, errcode: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.message, **self.extra}


def forbidden(message: str) -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", message)


def not_found(message: str) -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", message)


def bad_json(message: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", message)


def missing_param(message: str) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", message)


def invalid_param(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


def unknown_token(message: str = "Unrecognised access token", soft_logout: bool = False) -> MatrixError:
    return MatrixError(401, "M_UNKNOWN_TOKEN", message, soft_logout=soft_logout)


def missing_token() -> MatrixError:
    return MatrixError(401, "M_MISSING_TOKEN", "Missing access token")


def protocol_error_to_matrix(e: ProtocolError) -> MatrixError:
    if isinstance(e, AuthRejected):
        return MatrixError(403, "M_FORBIDDEN", e.message)
    if isinstance(e, EventTooLarge):
        return MatrixError(413, "M_TOO_LARGE", e.message)
    if isinstance(e, UnsupportedRoomVersion):
        return MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", e.message)
    if isinstance(e, CanonicalJsonError | FormatError):
        return MatrixError(400, e.errcode, e.message)
    return MatrixError(400, e.errcode, e.message)


def error_response(err: MatrixError) -> web.Response:
    return web.json_response(err.to_json(), status=err.status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def matrix_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MatrixError as e:
        return error_response(e)
    except ProtocolError as e:
        return error_response(protocol_error_to_matrix(e))
    except web.HTTPNotFound:
        # CS "Common error codes": unknown endpoints answer 404 M_UNRECOGNIZED.
        return error_response(MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request"))
    except web.HTTPMethodNotAllowed:
        return error_response(MatrixError(405, "M_UNRECOGNIZED", "Unrecognized request method"))
    except web.HTTPRequestEntityTooLarge:
        return error_response(MatrixError(413, "M_TOO_LARGE", "Request body too large"))
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("unhandled error serving %s %s", request.method, request.path)
        return error_response(MatrixError(500, "M_UNKNOWN", "Internal server error"))
