"""Room tagging (CS "Room Tagging"): ``/user/{userId}/rooms/{roomId}/tags[/{tag}]``.

A room's tags are the user's ``m.tag`` room account data (``{"tags": {name: {"order": ...}}}``), so /sync
delivers them with the rest of the room's account data. Writes to one user's tags are serialized (a read,
a change, a write) so that two tags set at once both stay.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from aiohttp import web

from ..protocol.canonical_json import parse_json
from ..protocol.errors import CanonicalJsonError
from ..storage.protocols.composite import HasAccountData
from .account_data import AccountDataHandlers
from .auth import Authenticator, Requester
from .ephemeral import SyncNotifier
from .errors import MatrixError, bad_json, forbidden, invalid_param

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
TAG_TYPE = "m.tag"
MAX_TAG_BYTES = 255  # CS: "The name of a tag MUST NOT exceed 255 bytes."
MAX_BODY = 65536


def tags_of(content: dict[str, Any] | None) -> dict[str, Any]:
    tags = content.get("tags") if content else None
    return dict(tags) if isinstance(tags, dict) else {}


class TagHandlers:
    def __init__(self, storage: HasAccountData, authenticator: Authenticator, notifier: SyncNotifier) -> None:
        self._storage = storage
        self._auth = authenticator
        self._notifier = notifier
        self._locks: dict[str, asyncio.Lock] = {}

    def routes(self) -> list[web.RouteDef]:
        r: list[web.RouteDef] = []
        for p in PREFIXES:
            r += [
                web.get(p + "/user/{user}/rooms/{room}/tags", self.get_tags),
                web.put(p + "/user/{user}/rooms/{room}/tags/{tag}", self.put_tag),
                web.delete(p + "/user/{user}/rooms/{room}/tags/{tag}", self.delete_tag),
            ]
        return r

    async def _owner(self, request: web.Request) -> tuple[Requester, str]:
        requester = await self._auth.require_user(request)
        if request.match_info["user"] != requester.user_id:
            raise forbidden("You cannot access tags for other users")
        # The same room id rules as room account data, which tags are.
        return requester, AccountDataHandlers.room_id(request)

    @staticmethod
    def _tag(request: web.Request) -> str:
        tag = request.match_info["tag"]
        if not tag or len(tag.encode()) > MAX_TAG_BYTES:
            raise invalid_param(f"A tag name must be 1 to {MAX_TAG_BYTES} bytes")
        return tag

    async def get_tags(self, request: web.Request) -> web.Response:
        requester, room_id = await self._owner(request)
        content = await self._storage.account_data.get_room(requester.user_id, room_id, TAG_TYPE)
        return web.json_response({"tags": tags_of(content)})

    async def put_tag(self, request: web.Request) -> web.Response:
        requester, room_id = await self._owner(request)
        tag = self._tag(request)
        raw = await request.read()
        if len(raw) > MAX_BODY:
            raise MatrixError(413, "M_TOO_LARGE", "Tag data is too large")
        try:
            # Not the strict parse of the rest of the API: a tag's order is a number between 0 and 1.
            body = parse_json(raw, strict=False)
        except CanonicalJsonError as e:
            raise MatrixError(400, "M_NOT_JSON", f"Content not JSON: {e.message}") from None
        if not isinstance(body, dict):
            raise bad_json("Tag data must be a JSON object")
        order = body.get("order")
        if order is not None and (
            not isinstance(order, (int, float)) or isinstance(order, bool) or not math.isfinite(order)
        ):
            raise bad_json("'order' must be a number")
        await self._change(requester.user_id, room_id, tag, body)
        return web.json_response({})

    async def delete_tag(self, request: web.Request) -> web.Response:
        requester, room_id = await self._owner(request)
        await self._change(requester.user_id, room_id, self._tag(request), None)
        return web.json_response({})

    async def _change(self, user_id: str, room_id: str, tag: str, data: dict[str, Any] | None) -> None:
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            content = await self._storage.account_data.get_room(user_id, room_id, TAG_TYPE)
            tags = tags_of(content)
            if data is None:
                if tag not in tags:
                    return  # removing what is not there changes nothing (and wakes no one)
                del tags[tag]
            else:
                tags[tag] = data
            await self._storage.account_data.put_room(user_id, room_id, TAG_TYPE, {"tags": tags})
        if not lock.locked():
            self._locks.pop(user_id, None)
        self._notifier.notify()
