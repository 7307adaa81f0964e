"""Rate limits of the client API: logins and registrations per client address, sending per user
(configured in homeserver.yaml ``rate_limits``). Applied as middleware, before any handler work."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Collection

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..config import RateLimits
from ..ratelimit import RateLimiter, RateSpec, limit_exceeded_body
from .http_util import access_token_from

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The requesting user's message limit override as (per_second, burst), if an admin set one (admin.policy).
OverrideLookup = Callable[[web.Request], Awaitable[tuple[int, int] | None]]


def _spec(limit: object) -> RateSpec:
    return RateSpec(limit.per_second, limit.burst)  # type: ignore[attr-defined]


def _kind(request: web.Request) -> str | None:
    path, method = request.path, request.method
    if method == "POST" and path.endswith("/login"):
        return "login"
    if method == "POST" and path.endswith("/register"):
        return "registration"
    if method == "PUT" and ("/send/" in path or "/state/" in path or "/redact/" in path):
        return "message"
    return None


def rate_limit_middleware(
    config: RateLimits,
    unlimited_tokens: Collection[str] = (),
    appservice_tokens: Collection[str] = (),
    override_for: OverrideLookup | None = None,
) -> Middleware:
    """``unlimited_tokens``: tokens never limited (appservices registered with ``rate_limited: false``);
    ``appservice_tokens``: the other appservices' tokens, limited per user they act as (``?user_id=``);
    ``override_for``: a user's own message limit set by an admin (Synapse's override_ratelimit; a rate of
    0 means not limited)."""
    limiters = {
        "login": RateLimiter(_spec(config.login)),
        "registration": RateLimiter(_spec(config.registration)),
        "message": RateLimiter(_spec(config.message)),
    }
    overridden: dict[tuple[int, int], RateLimiter] = {}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        kind = _kind(request) if config.enabled else None
        if kind is not None and unlimited_tokens and access_token_from(request) in unlimited_tokens:
            kind = None
        if kind is not None:
            if kind == "message":
                # Keyed by the token's hash (the user's device); an unauthenticated request fails anyway.
                token = access_token_from(request) or ""
                if token in appservice_tokens:
                    token += "\0" + request.query.get("user_id", "")
                key = hashlib.sha256(token.encode()).hexdigest()
            else:
                key = request.remote or "unknown"
            limiter: RateLimiter | None = limiters[kind]
            override = await override_for(request) if kind == "message" and override_for else None
            if override is not None:
                per_second, burst = override
                limiter = None
                if per_second > 0:
                    limiter = overridden.get(override)
                    if limiter is None:
                        limiter = overridden[override] = RateLimiter(RateSpec(per_second, max(1, burst)))
            wait = limiter.try_acquire(key) if limiter is not None else None
            if wait is not None:
                return web.json_response(
                    limit_exceeded_body(wait), status=429, headers={"Retry-After": str(int(wait) + 1)}
                )
        return await handler(request)

    return middleware
