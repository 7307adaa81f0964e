"""``POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync``: simplified sliding sync (MSC4186)
as Synapse 1.163 serves it. The response itself is computed in ranvier/sync/; this is the HTTP edge:
the body and query, the connection's ``pos``, and long-polling with ``timeout``.

Errors, as Synapse's: a body that does not fit the request model is 400 ``M_BAD_JSON``; a malformed
``pos`` 400 ``M_UNKNOWN``; a ``pos`` the server does not hold (expired, from before a restart) 400
``M_UNKNOWN_POS``, on which clients start the connection again.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from aiohttp import web

from ..storage.protocols.composite import HasDb, HasStream
from ..storage.sql.sliding_positions import SlidingPositionStore
from ..storage.sql.sliding_sync import SlidingSyncStore
from ..sync.changes import ChangesStorage, SyncExtras
from ..sync.connections import ConnectionStore, Position, UnknownPosition, format_pos, parse_pos
from ..sync.extensions import SlidingExtensions
from ..sync.room_data import RoomDataBuilder, RoomDataStorage
from ..sync.sliding import SlidingStorage, SlidingSync
from ..sync.sliding_request import parse_request
from ..sync.waiting import wait_any
from .auth import Authenticator
from .ephemeral import SyncNotifier, TypingStream
from .errors import MatrixError
from .http_util import query_int

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
UNSTABLE_FEATURE = "org.matrix.simplified_msc3575"
MAX_TIMEOUT_MS = 60_000


class SlidingSyncApiStorage(ChangesStorage, SlidingStorage, RoomDataStorage, HasDb, HasStream, Protocol):
    """What client_api/sliding_sync.py asks of storage."""


class SlidingSyncHandlers:
    def __init__(
        self,
        storage: SlidingSyncApiStorage,
        authenticator: Authenticator,
        sliding: SlidingSync,
        connections: ConnectionStore,
        extras: SyncExtras,
        typing: TypingStream,
        notifier: SyncNotifier,
    ) -> None:
        self._storage = storage
        self._auth = authenticator
        self._sliding = sliding
        self._connections = connections
        self._extras = extras
        self._typing = typing
        self._notifier = notifier

    @classmethod
    def create(
        cls,
        storage: SlidingSyncApiStorage,
        authenticator: Authenticator,
        typing: TypingStream,
        notifier: SyncNotifier,
        visibility: Any,
        e2ee: Any,
        to_device: Any,
    ) -> SlidingSyncHandlers:
        """The handlers with their parts: the sliding sync reads over ``storage``'s database, the
        per-room builder (history visibility applied), the extensions over the /sync sources
        (``e2ee``: devices.sync_section.E2eeSync, ``to_device``: devices.to_device.ToDeviceService)."""
        extras = SyncExtras(storage, typing)
        store = SlidingSyncStore(storage.db)
        sliding = SlidingSync(
            storage,
            store,
            RoomDataBuilder(storage, store, visibility),
            SlidingExtensions(extras, e2ee, to_device),
        )
        connections = ConnectionStore(SlidingPositionStore(storage.db))
        return cls(storage, authenticator, sliding, connections, extras, typing, notifier)

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self.sync)]

    async def sync(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        timeout_ms = query_int(request, "timeout", 0, 0, MAX_TIMEOUT_MS)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
            parsed = parse_request(body)
        except ValueError as e:  # json.JSONDecodeError is one
            raise MatrixError(400, "M_BAD_JSON", str(e)) from None
        key = (requester.user_id, requester.device_id, parsed.conn_id or "")
        pos_raw = request.query.get("pos")
        previous_id: int | None = None
        since: Position | None = None
        if pos_raw is not None:
            try:
                previous_id, _ = parse_pos(pos_raw)
            except ValueError:
                # Synapse's answer to a malformed pos: 400 M_UNKNOWN "Invalid stream token".
                raise MatrixError(400, "M_UNKNOWN", "Invalid stream token") from None
            try:
                since = await self._connections.get(key, previous_id)
            except UnknownPosition:
                raise MatrixError(400, "M_UNKNOWN_POS", "Unknown position") from None
        stream = self._storage.stream
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            ticket = self._notifier.ticket()  # before reading positions: see SyncNotifier
            upto = await self._extras.position(stream.current_position())
            result = await self._sliding.compute(requester.user_id, requester.device_id, parsed, since, upto)
            remaining = deadline - loop.time()
            # An initial request answers at once; an incremental one waits (up to ``timeout``) for news.
            if since is None or result.has_news or remaining <= 0:
                break
            expiry = self._typing.seconds_to_next_expiry()
            if expiry is not None:
                remaining = min(remaining, expiry + 0.01)
            await wait_any(stream.wait_for_new(upto.events, remaining), ticket.wait(), remaining)
        position_id = await self._connections.save(key, previous_id, result.position)
        return web.json_response({"pos": format_pos(position_id, result.position.token), **result.body})
