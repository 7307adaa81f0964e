"""``GET /pushers`` and ``POST /pushers/set`` (CS "Push Notifications" > "Pushers"): http pushers only
(``kind: null`` deletes one; ``append``). Deliveries to the push gateway are ranvier/push/delivery.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web

from ..storage.protocols.composite import HasPushers, HasStream
from ..storage.sql.pushers import Pusher
from .auth import Authenticator
from .errors import MatrixError
from .http_util import read_json_body

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
NOTIFY_PATH = "/_matrix/push/v1/notify"
MAX_PUSHKEY_BYTES = 512
MAX_APP_ID_CHARS = 64


class PushersStorage(HasStream, HasPushers, Protocol):
    """What client_api/pushers.py asks of storage."""


def _missing(*names: str) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", f"Missing parameters: {', '.join(names)}")


def _invalid(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


class PusherHandlers:
    def __init__(
        self, storage: PushersStorage, authenticator: Authenticator, on_change: Callable[[], None]
    ) -> None:
        self._storage = storage
        self._auth = authenticator
        self._on_change = on_change  # wakes the delivery loop

    def routes(self) -> list[web.RouteDef]:
        r: list[web.RouteDef] = []
        for p in PREFIXES:
            r += [web.get(p + "/pushers", self.get_pushers), web.post(p + "/pushers/set", self.set_pusher)]
        return r

    async def get_pushers(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        pushers = await self._storage.pushers.pushers_for_user(requester.user_id)
        return web.json_response({"pushers": [p.client_json() for p in pushers]})

    async def set_pusher(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        missing = [k for k in ("kind", "app_id", "pushkey") if k not in body]
        if missing:
            raise _missing(*missing)
        kind, app_id, pushkey = body["kind"], body["app_id"], body["pushkey"]
        if not isinstance(app_id, str) or not app_id or len(app_id) > MAX_APP_ID_CHARS:
            raise _invalid(f"app_id must be a string of 1 to {MAX_APP_ID_CHARS} characters")
        if not isinstance(pushkey, str) or not pushkey or len(pushkey.encode()) > MAX_PUSHKEY_BYTES:
            raise _invalid(f"pushkey must be a string of 1 to {MAX_PUSHKEY_BYTES} bytes")
        if kind is None:
            await self._storage.pushers.delete_pusher(requester.user_id, app_id, pushkey)
            return web.json_response({})
        if kind != "http":
            raise _invalid(f"Unsupported pusher kind {kind!r}: only 'http' pushers are served")
        missing = [k for k in ("app_display_name", "device_display_name", "lang", "data") if k not in body]
        if missing:
            raise _missing(*missing)
        for key in ("app_display_name", "device_display_name", "lang"):
            if not isinstance(body[key], str):
                raise _invalid(f"{key} must be a string")
        data = body["data"]
        if not isinstance(data, dict):
            raise _invalid("data must be an object")
        url = data.get("url")
        if not isinstance(url, str):
            raise _missing("data.url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path != NOTIFY_PATH:
            raise _invalid(f"data.url must be an HTTP(S) URL with the path {NOTIFY_PATH}")
        profile_tag = body.get("profile_tag")
        if profile_tag is not None and not isinstance(profile_tag, str):
            raise _invalid("profile_tag must be a string")
        append = body.get("append", False)
        if not isinstance(append, bool):
            raise _invalid("append must be a boolean")
        pusher = Pusher(
            requester.user_id,
            app_id,
            pushkey,
            kind,
            body["app_display_name"],
            body["device_display_name"],
            profile_tag,
            body["lang"],
            data,
            requester.device_id,
            # Deliveries start with what notifies from now on.
            self._storage.stream.current_position(),
        )
        await self._storage.pushers.set_pusher(pusher, append)
        self._on_change()
        return web.json_response({})
