"""Requests from the homeserver to an appservice (AS API): transactions, user and alias queries, ping,
third-party look-ups. Every request carries ``Authorization: Bearer <hs_token>`` and has a bounded time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import aiohttp

from .registration import AppService

PUSH_TIMEOUT = 30.0
QUERY_TIMEOUT = 5.0


class AppServiceUnreachable(Exception):
    """No usable answer: ``kind`` is 'timeout', 'connection' or 'status' (with ``status`` and ``body``)."""

    def __init__(self, kind: str, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.body = body


class AppServiceClient:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self,
        service: AppService,
        method: str,
        path: str,
        timeout: float,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        if service.url is None:
            raise AppServiceUnreachable("no_url", f"appservice {service.id} has no url")
        headers = {"Authorization": f"Bearer {service.hs_token}"}
        try:
            async with asyncio.timeout(timeout):
                async with self._http().request(
                    method, service.url + path, json=body, headers=headers, params=params
                ) as resp:
                    text = await resp.text()
                    try:
                        data = await resp.json(content_type=None) if text else None
                    except ValueError:
                        data = None
                    if resp.status >= 300 and resp.status != 404:
                        raise AppServiceUnreachable(
                            "status",
                            f"appservice {service.id} answered {resp.status}",
                            resp.status,
                            text[:1000],
                        )
                    return resp.status, data
        except TimeoutError:
            raise AppServiceUnreachable(
                "timeout", f"appservice {service.id} did not answer in {timeout} s"
            ) from None
        except aiohttp.ClientError as e:
            raise AppServiceUnreachable("connection", f"cannot reach appservice {service.id}: {e}") from None

    async def push(self, service: AppService, txn_id: int, body: dict[str, Any]) -> None:
        """PUT one transaction; returns when the appservice accepted it (2xx), raises otherwise."""
        status, _ = await self._request(
            service, "PUT", f"/_matrix/app/v1/transactions/{txn_id}", PUSH_TIMEOUT, body=body
        )
        if status == 404:
            raise AppServiceUnreachable("status", f"appservice {service.id} answered 404", 404)

    async def query_user(self, service: AppService, user_id: str) -> bool:
        """AS "Query User": True when the appservice says it created the user (then it exists here)."""
        status, _ = await self._request(
            service, "GET", f"/_matrix/app/v1/users/{quote(user_id, safe='')}", QUERY_TIMEOUT, body=None
        )
        return status == 200

    async def query_alias(self, service: AppService, alias: str) -> bool:
        """AS "Query Room Alias": True when the appservice says it created the alias."""
        status, _ = await self._request(
            service, "GET", f"/_matrix/app/v1/rooms/{quote(alias, safe='')}", QUERY_TIMEOUT
        )
        return status == 200

    async def ping(self, service: AppService, transaction_id: str | None) -> int:
        """POST /_matrix/app/v1/ping; the round trip in milliseconds."""
        start = time.monotonic()
        body = {"transaction_id": transaction_id} if transaction_id is not None else {}
        status, _ = await self._request(service, "POST", "/_matrix/app/v1/ping", QUERY_TIMEOUT, body=body)
        if status == 404:
            raise AppServiceUnreachable("status", f"appservice {service.id} answered 404", 404, "")
        return int((time.monotonic() - start) * 1000)

    async def thirdparty(self, service: AppService, path: str, params: dict[str, str]) -> Any:
        """GET /_matrix/app/v1/thirdparty/...; None when the appservice has nothing (404) or fails."""
        try:
            status, data = await self._request(
                service, "GET", f"/_matrix/app/v1/thirdparty/{path}", QUERY_TIMEOUT, params=params
            )
        except AppServiceUnreachable:
            return None
        return data if status == 200 else None
