"""Media administration, in the shape of Synapse's admin API (server admins only):

- ``POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}`` and ``.../unquarantine/...``: a
  quarantined media (local or cached remote) is no longer served to anyone (404), here or over federation;
- ``DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}``: delete a local media (its file too, once no
  other media or thumbnail uses the same bytes);
- ``GET /_synapse/admin/v1/users/{userId}/media`` (``from``/``limit``) and ``DELETE`` on the same path: a
  user's uploads, listed or all deleted;
- ``GET /_synapse/admin/v1/room/{roomId}/media`` and ``POST .../media/quarantine``: the media a room's
  events cite (every ``mxc://`` URI in their JSON; not inside encrypted events, which we cannot read),
  listed or all quarantined;
- ``POST /_synapse/admin/v1/purge_media_cache?before_ts=<ms>``: forget cached remote media fetched before
  then.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..client_api.auth import Authenticator
from ..client_api.errors import MatrixError, invalid_param, not_found
from ..client_api.http_util import query_int
from ..media.repository import MediaRepository
from .access import audit_log

PREFIX = "/_synapse/admin/v1"


class MediaAdminHandlers:
    def __init__(self, repository: MediaRepository, authenticator: Authenticator) -> None:
        self._repo = repository
        self._auth = authenticator

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(PREFIX + "/media/quarantine/{server_name}/{media_id}", self.quarantine),
            web.post(PREFIX + "/media/unquarantine/{server_name}/{media_id}", self.unquarantine),
            web.delete(PREFIX + "/media/{server_name}/{media_id}", self.delete_media),
            web.get(PREFIX + "/room/{room_id}/media", self.list_room_media),
            web.post(PREFIX + "/room/{room_id}/media/quarantine", self.quarantine_room_media),
            web.get(PREFIX + "/users/{user_id}/media", self.list_user_media),
            web.delete(PREFIX + "/users/{user_id}/media", self.delete_user_media),
            web.post(PREFIX + "/purge_media_cache", self.purge_media_cache),
        ]

    async def purge_media_cache(self, request: web.Request) -> web.Response:
        """Synapse's ``POST /_synapse/admin/v1/purge_media_cache?before_ts=<ms>``: remote media cached before
        then are forgotten (fetched again on demand). Ranvier keeps when a remote media was fetched, not
        when it was last read, so ``before_ts`` is compared with the fetch time; quarantined media stay."""
        await self._require_admin(request)
        if "before_ts" not in request.query:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing integer query parameter 'before_ts'")
        before_ts = query_int(request, "before_ts", 0)
        deleted = await self._repo.purge_remote_cache(before_ts)
        audit_log.info("purged %d cached remote media fetched before %d", deleted, before_ts)
        return web.json_response({"deleted": deleted})

    async def _require_admin(self, request: web.Request) -> None:
        requester = await self._auth.require_user(request)
        if not requester.is_admin:
            audit_log.warning(
                "refused admin request %s %s by non-admin %s", request.method, request.path, requester.user_id
            )
            raise MatrixError(403, "M_FORBIDDEN", "You are not a server admin")
        audit_log.info("admin %s: %s %s", requester.user_id, request.method, request.path)

    async def _set_quarantine(self, request: web.Request, quarantined: bool) -> web.Response:
        await self._require_admin(request)
        server_name, media_id = request.match_info["server_name"], request.match_info["media_id"]
        store = self._repo.store
        if server_name == self._repo.server_name:
            if await store.get_local(media_id) is None:
                raise not_found("No such local media")
            await store.set_local_quarantined(media_id, quarantined)
        else:
            if await store.get_remote(server_name, media_id) is None:
                raise not_found("No such remote media in the cache")
            await store.set_remote_quarantined(server_name, media_id, quarantined)
        return web.json_response({})

    async def quarantine(self, request: web.Request) -> web.Response:
        return await self._set_quarantine(request, True)

    async def unquarantine(self, request: web.Request) -> web.Response:
        return await self._set_quarantine(request, False)

    async def delete_media(self, request: web.Request) -> web.Response:
        await self._require_admin(request)
        server_name, media_id = request.match_info["server_name"], request.match_info["media_id"]
        if server_name != self._repo.server_name:
            raise invalid_param("Can only delete local media")
        if not await self._repo.delete_local(media_id):
            raise not_found("No such local media")
        return web.json_response({"deleted_media": [media_id], "total": 1})

    async def list_room_media(self, request: web.Request) -> web.Response:
        await self._require_admin(request)
        cited = await self._repo.store.media_cited_in_room(request.match_info["room_id"])
        ours = self._repo.server_name
        return web.json_response(
            {
                "local": sorted(f"mxc://{s}/{m}" for s, m in cited if s == ours),
                "remote": sorted(f"mxc://{s}/{m}" for s, m in cited if s != ours),
            }
        )

    async def quarantine_room_media(self, request: web.Request) -> web.Response:
        """Every media the room's events cite that we hold (uploaded here, or cached from elsewhere)."""
        await self._require_admin(request)
        store = self._repo.store
        count = 0
        for server_name, media_id in await store.media_cited_in_room(request.match_info["room_id"]):
            if server_name == self._repo.server_name:
                if await store.get_local(media_id) is not None:
                    await store.set_local_quarantined(media_id, True)
                    count += 1
            elif await store.get_remote(server_name, media_id) is not None:
                await store.set_remote_quarantined(server_name, media_id, True)
                count += 1
        return web.json_response({"num_quarantined": count})

    async def list_user_media(self, request: web.Request) -> web.Response:
        await self._require_admin(request)
        user_id = request.match_info["user_id"]
        start = query_int(request, "from", 0)
        limit = query_int(request, "limit", 100, lo=1, hi=1000)
        media = await self._repo.store.local_media_of_user(user_id)
        page = media[start : start + limit]
        answer: dict[str, Any] = {
            "media": [
                {
                    "media_id": m.media_id,
                    "media_type": m.content_type,
                    "media_length": m.size,
                    "upload_name": m.upload_name,
                    "created_ts": m.created_ts,
                    "quarantined_by": "admin" if m.quarantined else None,
                    "safe_from_quarantine": False,
                }
                for m in page
            ],
            "total": len(media),
        }
        if start + limit < len(media):
            answer["next_token"] = start + limit
        return web.json_response(answer)

    async def delete_user_media(self, request: web.Request) -> web.Response:
        await self._require_admin(request)
        user_id = request.match_info["user_id"]
        deleted = []
        for m in await self._repo.store.local_media_of_user(user_id):
            if await self._repo.delete_local(m.media_id):
                deleted.append(m.media_id)
        return web.json_response({"deleted_media": deleted, "total": len(deleted)})
