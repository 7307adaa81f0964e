"""Profiles of other servers' users, asked over federation (S2S "GET /_matrix/federation/v1/query/profile"):
for ``GET /profile/{userId}`` of a remote user and for the displayname/avatar_url an invite of a remote
user carries (CS "Events on Change of Profile Information"; Synapse's include_profile_data_on_invite)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from ..federation.client import FederationError
from ..protocol.errors import InvalidIdentifier
from ..protocol.identifiers import server_of

logger = logging.getLogger(__name__)

# A profile is a nicety: an invite does not wait long for a slow server.
QUERY_TIMEOUT_S = 5.0
PROFILE_FIELDS = ("displayname", "avatar_url")


class ProfileQuerier(Protocol):
    async def query_profile(
        self, destination: str, user_id: str, field: str | None = None
    ) -> dict[str, Any]: ...


class RemoteProfiles:
    def __init__(self, client: ProfileQuerier) -> None:
        self._client = client

    async def lookup(self, user_id: str) -> dict[str, Any] | None:
        """The user's displayname and avatar_url (those that are strings), or None when their server does
        not answer, refuses or has no such user."""
        try:
            server = server_of(user_id)
            answer = await asyncio.wait_for(self._client.query_profile(server, user_id), QUERY_TIMEOUT_S)
        except (FederationError, InvalidIdentifier, TimeoutError, ValueError) as e:
            logger.info("no profile for %s: %s", user_id, e)
            return None
        if not isinstance(answer, dict):
            return None
        return {k: v for k, v in answer.items() if k in PROFILE_FIELDS and isinstance(v, str)}
