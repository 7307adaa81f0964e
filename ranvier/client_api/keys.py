"""The key endpoints of CS "End-to-End Encryption": ``/keys/upload``, ``/keys/query``, ``/keys/claim``,
``/keys/changes``, ``/keys/device_signing/upload`` (cross-signing, with user-interactive auth) and
``/keys/signatures/upload``. Thin: parsing and errors here, the work in ranvier.devices.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..devices.device_lists import DeviceLists
from ..devices.keys import KeyService
from ..devices.validation import KeyError_
from .auth import Authenticator, Requester
from .errors import MatrixError, bad_json, invalid_param, missing_param
from .http_util import read_json_body
from .sync_extras import SyncToken

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
PasswordUia = Callable[[Requester, dict[str, Any], str], Awaitable[None]]
MAX_REMOTE_TIMEOUT_MS = 60_000


def _key_error(e: KeyError_) -> MatrixError:
    return MatrixError(400, e.errcode, e.message)


def _timeout_s(body: dict[str, Any]) -> float:
    timeout = body.get("timeout", 10_000)
    if type(timeout) is not int or timeout < 0:
        raise invalid_param("'timeout' must be a non-negative integer")
    return min(timeout, MAX_REMOTE_TIMEOUT_MS) / 1000


class KeyHandlers:
    def __init__(
        self,
        keys: KeyService,
        device_lists: DeviceLists,
        authenticator: Authenticator,
        require_password: PasswordUia,
    ) -> None:
        self._keys = keys
        self._lists = device_lists
        self._auth = authenticator
        self._require_password = require_password

    def routes(self) -> list[web.RouteDef]:
        out: list[web.RouteDef] = []
        for p in PREFIXES:
            out += [
                web.post(p + "/keys/upload", self.upload),
                web.post(p + "/keys/upload/{device_id}", self.upload),  # r0 clients still send the id
                web.post(p + "/keys/query", self.query),
                web.post(p + "/keys/claim", self.claim),
                web.get(p + "/keys/changes", self.changes),
                web.post(p + "/keys/device_signing/upload", self.device_signing_upload),
                web.post(p + "/keys/signatures/upload", self.signatures_upload),
            ]
        return out

    async def upload(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        if not requester.device_id:
            # An appservice acting without ?device_id= has no device to hold keys (AS "Identity assertion").
            raise MatrixError(400, "M_MISSING_PARAM", "Uploading keys needs a device: pass device_id")
        body = await read_json_body(request, allow_empty=True)
        try:
            answer = await self._keys.upload(requester.user_id, requester.device_id, body)
        except KeyError_ as e:
            raise _key_error(e) from None
        return web.json_response(answer)

    async def query(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        wanted = body.get("device_keys")
        if wanted is None:
            raise missing_param("Missing 'device_keys'")
        if not isinstance(wanted, dict) or not all(
            isinstance(v, list) and all(isinstance(d, str) for d in v) for v in wanted.values()
        ):
            raise bad_json("'device_keys' must map user ids to lists of device ids")
        answer = await self._keys.query(requester.user_id, wanted, _timeout_s(body))
        return web.json_response(answer)

    async def claim(self, request: web.Request) -> web.Response:
        await self._auth.require_user(request)
        body = await read_json_body(request)
        wanted = body.get("one_time_keys")
        if wanted is None:
            raise missing_param("Missing 'one_time_keys'")
        if not isinstance(wanted, dict) or not all(
            isinstance(v, dict) and all(isinstance(a, str) for a in v.values()) for v in wanted.values()
        ):
            raise bad_json("'one_time_keys' must map user ids to {device id: algorithm}")
        return web.json_response(await self._keys.claim(wanted, timeout_s=_timeout_s(body)))

    async def changes(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        tokens: list[SyncToken] = []
        for name in ("from", "to"):
            raw = request.query.get(name)
            if raw is None:
                raise missing_param(f"Missing query parameter '{name}'")
            try:
                tokens.append(SyncToken.parse(raw))
            except ValueError:
                raise invalid_param(f"invalid '{name}' token") from None
        since, upto = tokens
        delta = await self._lists.delta(
            requester.user_id, since.device_lists, upto.device_lists, since.events, upto.events
        )
        return web.json_response({"changed": sorted(delta.changed), "left": sorted(delta.left)})

    async def device_signing_upload(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        keys = {k: v for k, v in body.items() if k != "auth"}
        if await self._keys.cross_signing_needs_auth(requester.user_id, keys):
            await self._require_password(requester, body, "device_signing_upload")
        try:
            await self._keys.upload_cross_signing(requester.user_id, keys)
        except KeyError_ as e:
            raise _key_error(e) from None
        return web.json_response({})

    async def signatures_upload(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        return web.json_response(await self._keys.upload_signatures(requester.user_id, body))
