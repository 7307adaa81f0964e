"""``POST /user_directory/search`` (CS "User Directory").

Whom a user finds: the users they share a joined room with and the users joined to rooms that are public
(join rule ``public`` or history ``world_readable``), local and remote, as the spec requires at a minimum;
with ``user_directory.search_all_users`` (off by default, as Synapse) every local user too. A word of the
term matches the start of a word of a user's id or display name, case-insensitively; every word must match.
"""

from __future__ import annotations

from aiohttp import web

from ..storage.protocols.composite import HasUserDirectory
from ..storage.sql.user_directory import query_words
from .auth import Authenticator
from .errors import bad_json, invalid_param
from .http_util import read_json_body, require_str

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
DEFAULT_LIMIT = 10  # CS: "Defaults to 10."
MAX_LIMIT = 100


class UserDirectoryHandlers:
    def __init__(
        self, storage: HasUserDirectory, authenticator: Authenticator, *, search_all_users: bool = False
    ) -> None:
        self._storage = storage
        self._auth = authenticator
        self._all_users = search_all_users

    def routes(self) -> list[web.RouteDef]:
        return [web.post(p + "/user_directory/search", self.search) for p in PREFIXES]

    async def search(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        term = require_str(body, "search_term")
        limit = body.get("limit", DEFAULT_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise bad_json("'limit' must be an integer")
        if limit < 0:
            raise invalid_param("'limit' must not be negative")
        limit = min(limit, MAX_LIMIT)
        words = query_words(term)
        found = await self._storage.user_directory.search(
            requester.user_id, words, limit + 1, all_users=self._all_users
        )
        results = []
        for entry in found[:limit]:
            result = {"user_id": entry.user_id}
            if entry.display_name is not None:
                result["display_name"] = entry.display_name
            if entry.avatar_url is not None:
                result["avatar_url"] = entry.avatar_url
            results.append(result)
        return web.json_response({"results": results, "limited": len(found) > limit})
