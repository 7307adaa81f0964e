"""Asking appservices about users and aliases they may create on demand (AS "Querying the application
service"), with bounded time: a slow or dead appservice counts as "no" for the client waiting."""

from __future__ import annotations

import logging

from .client import AppServiceClient, AppServiceUnreachable
from .registration import AppServices

logger = logging.getLogger(__name__)


class AppServiceQueries:
    def __init__(self, services: AppServices, client: AppServiceClient) -> None:
        self._services = services
        self._client = client

    async def query_alias(self, alias: str) -> bool:
        """True when an appservice whose alias namespace covers ``alias`` says it created it just now."""
        for service in self._services.interested_in_alias(alias):
            if service.url is None:
                continue
            try:
                if await self._client.query_alias(service, alias):
                    return True
            except AppServiceUnreachable as e:
                logger.info("alias query %s to appservice %s failed: %s", alias, service.id, e)
        return False

    async def query_user(self, user_id: str) -> bool:
        """True when an appservice whose user namespace covers ``user_id`` says it exists (it registers
        the user before answering)."""
        for service in self._services.interested_in_user(user_id):
            if service.url is None:
                continue
            try:
                if await self._client.query_user(service, user_id):
                    return True
            except AppServiceUnreachable as e:
                logger.info("user query %s to appservice %s failed: %s", user_id, service.id, e)
        return False
