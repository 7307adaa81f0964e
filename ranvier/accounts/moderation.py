"""Account suspension (CS "Account suspension", v1.13): which client requests a suspended user may not
make. The spec leaves the exact set to the server, asks that reading, leaving, rejecting invites,
redacting one's own events, device and key management, logging out and deactivating stay possible,
and recommends forbidding the rest of the list below: joining or knocking, sending or accepting invites
(an acceptance is a join), sending messages and state, changing the profile, redacting other users'
events. Room creation and upgrades are forbidden too (each sends state and messages as the user).

A forbidden request is answered 403 M_USER_SUSPENDED by the Authenticator before its handler runs.
Locking (CS "Account locking") needs no policy: every request but /logout and /logout/all is refused.
"""

from __future__ import annotations

import re

from aiohttp import web

from ..storage.protocols.composite import HasEvents

CLIENT_PREFIX = re.compile(r"^/_matrix/client/(?:v1|v3|r0)")
REDACTION = "m.room.redaction"

# (method, route pattern after the client prefix) always forbidden while suspended.
_FORBIDDEN = {
    ("POST", "/createRoom"),
    ("POST", "/join/{room}"),
    ("POST", "/join/{room_id_or_alias}"),
    ("POST", "/rooms/{room}/join"),
    ("POST", "/knock/{room}"),
    ("POST", "/rooms/{room}/invite"),
    ("POST", "/rooms/{room}/upgrade"),
    ("PUT", "/rooms/{room}/state/{type}"),
    ("PUT", "/rooms/{room}/state/{type}/"),
    ("PUT", "/rooms/{room}/state/{type}/{key}"),
}
_PROFILE = re.compile(r"^/profile/\{user_id\}/(?:displayname|avatar_url|\{[a-z_]+\})$")


def route_of(request: web.Request) -> str | None:
    """The route pattern that matched, without the client prefix (``/rooms/{room}/send/{type}/{txn}``)."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    return CLIENT_PREFIX.sub("", resource.canonical)


class SuspensionPolicy:
    def __init__(self, storage: HasEvents) -> None:
        self._storage = storage

    async def forbids(self, request: web.Request, user_id: str) -> bool:
        """Whether a suspended ``user_id`` may not make this request."""
        route = route_of(request)
        if route is None:
            return False
        method = request.method
        if (method, route) in _FORBIDDEN:
            return True
        if method in ("PUT", "DELETE") and _PROFILE.match(route):
            return True
        if method == "PUT" and route == "/rooms/{room}/redact/{event}/{txn}":
            return not await self._own_event(request.match_info["event"], user_id)
        if method == "PUT" and route == "/rooms/{room}/send/{type}/{txn}":
            if request.match_info["type"] != REDACTION:
                return True
            # A redaction sent through /send: allowed for the user's own events only.
            try:
                body = await request.json()
            except ValueError:
                return False  # the handler answers the bad body
            target = body.get("redacts") if isinstance(body, dict) else None
            return not (isinstance(target, str) and await self._own_event(target, user_id))
        return False

    async def _own_event(self, event_id: str, user_id: str) -> bool:
        pdu = await self._storage.events.get_event(event_id)
        return pdu is not None and pdu.sender == user_id
