"""Who may call the admin API, and the record of what they did.

Admin access is the caller's ``admin`` flag, read from the database on every request (so a demoted admin
loses access at once). Every admin action is logged on the ``ranvier.admin`` logger: who, what, on what.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..client_api.auth import Authenticator, Requester
from ..client_api.errors import MatrixError, invalid_param

audit_log = logging.getLogger("ranvier.admin")


class AdminAccess:
    def __init__(self, authenticator: Authenticator, server_name: str) -> None:
        self.authenticator = authenticator
        self.server_name = server_name

    async def require_admin(self, request: web.Request) -> Requester:
        """The requester, if a server admin; 401 without a valid token, 403 M_FORBIDDEN otherwise.
        The action (method and path) is logged with the admin's id."""
        requester = await self.authenticator.require_user(request)
        if not requester.is_admin:
            audit_log.warning(
                "refused admin request %s %s by non-admin %s", request.method, request.path, requester.user_id
            )
            raise MatrixError(403, "M_FORBIDDEN", "You are not a server admin")
        audit_log.info("admin %s: %s %s", requester.user_id, request.method, request.path)
        return requester

    def require_local_user_id(self, user_id: str) -> str:
        """A syntactically valid user id of this server (400 M_INVALID_PARAM otherwise)."""
        if not user_id.startswith("@") or ":" not in user_id:
            raise invalid_param(f"{user_id!r} is not a user id")
        if user_id.split(":", 1)[1] != self.server_name:
            raise invalid_param("Can only manage local users")
        return user_id


def note(requester: Requester, action: str, **details: Any) -> None:
    """Log one admin action that changed something, with its particulars."""
    extra = " ".join(f"{k}={v!r}" for k, v in details.items())
    audit_log.info("admin %s %s %s", requester.user_id, action, extra)


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise invalid_param(f"'{name}' must be true or false")


def query_dir(request: web.Request) -> bool:
    """``dir``: ``f`` (forwards, the default) or ``b``; True when backwards."""
    direction = request.query.get("dir", "f")
    if direction not in ("f", "b"):
        raise invalid_param("'dir' must be 'f' or 'b'")
    return direction == "b"
