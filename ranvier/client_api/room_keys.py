"""Server-side key backup endpoints (CS "Server-side key backups"): ``/room_keys/version`` and
``/room_keys/keys`` at its three levels. Thin: the rules are in ranvier.devices.key_backup."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..devices.key_backup import BackupError, KeyBackups, parse_key, parse_rooms, parse_sessions
from .auth import Authenticator
from .errors import MatrixError
from .http_util import read_json_body

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/unstable")
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _errors(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except BackupError as e:
            raise MatrixError(e.status, e.errcode, e.message, **e.extra) from None

    return wrapped


class RoomKeyHandlers:
    def __init__(self, backups: KeyBackups, authenticator: Authenticator) -> None:
        self._backups = backups
        self._auth = authenticator

    def routes(self) -> list[web.RouteDef]:
        out: list[web.RouteDef] = []
        for p in PREFIXES:
            v, k = p + "/room_keys/version", p + "/room_keys/keys"
            out += [
                web.post(v, _errors(self.create_version)),
                web.get(v, _errors(self.get_version)),
                web.get(v + "/{version}", _errors(self.get_version)),
                web.put(v + "/{version}", _errors(self.update_version)),
                web.delete(v + "/{version}", _errors(self.delete_version)),
                web.put(k, _errors(self.put_keys)),
                web.put(k + "/{room_id}", _errors(self.put_keys)),
                web.put(k + "/{room_id}/{session_id}", _errors(self.put_keys)),
                web.get(k, _errors(self.get_keys)),
                web.get(k + "/{room_id}", _errors(self.get_keys)),
                web.get(k + "/{room_id}/{session_id}", _errors(self.get_keys)),
                web.delete(k, _errors(self.delete_keys)),
                web.delete(k + "/{room_id}", _errors(self.delete_keys)),
                web.delete(k + "/{room_id}/{session_id}", _errors(self.delete_keys)),
            ]
        return out

    async def create_version(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        return web.json_response({"version": await self._backups.create(requester.user_id, body)})

    async def get_version(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        return web.json_response(
            await self._backups.get(requester.user_id, request.match_info.get("version"))
        )

    async def update_version(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        await self._backups.update(requester.user_id, request.match_info["version"], body)
        return web.json_response({})

    async def delete_version(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        await self._backups.delete(requester.user_id, request.match_info["version"])
        return web.json_response({})

    async def put_keys(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        room_id, session_id = request.match_info.get("room_id"), request.match_info.get("session_id")
        if session_id is not None and room_id is not None:
            keys = [parse_key(room_id, session_id, body)]
        elif room_id is not None:
            keys = parse_sessions(room_id, body)
        else:
            keys = parse_rooms(body)
        answer = await self._backups.put(requester.user_id, request.query.get("version"), keys)
        return web.json_response(answer)

    async def get_keys(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        info = request.match_info
        answer = await self._backups.get_keys(
            requester.user_id, request.query.get("version"), info.get("room_id"), info.get("session_id")
        )
        return web.json_response(answer)

    async def delete_keys(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        info = request.match_info
        answer = await self._backups.delete_keys(
            requester.user_id, request.query.get("version"), info.get("room_id"), info.get("session_id")
        )
        return web.json_response(answer)
