"""``GET /_matrix/client/versions`` and ``GET /.well-known/matrix/client`` (CS "Server Discovery")."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from .errors import not_found

# Clients pick features by these: r0.x for the oldest (matrix-nio, older bots), v1.x for the rest.
# v1.11 and v1.12 need authenticated media (/_matrix/client/v1/media/*, with the Content-Disposition rules
# and the freeze of the unauthenticated endpoints): ranvier.client_api.media, tests/media/.
SUPPORTED_VERSIONS: tuple[str, ...] = (
    "r0.0.1",
    "r0.1.0",
    "r0.2.0",
    "r0.3.0",
    "r0.4.0",
    "r0.5.0",
    "r0.6.0",
    "r0.6.1",
    *(f"v1.{minor}" for minor in range(1, 13)),
)

# Unstable features the server implements, advertised so clients use them.
UNSTABLE_FEATURES: dict[str, bool] = {
    # Simplified sliding sync (MSC4186): ranvier.client_api.sliding_sync, ranvier/sync/.
    "org.matrix.simplified_msc3575": True,
}


class VersionsHandlers:
    def __init__(
        self,
        public_base_url: str | None,
        versions: Sequence[str] = SUPPORTED_VERSIONS,
        unstable_features: dict[str, bool] | None = None,
    ) -> None:
        """``public_base_url`` is what clients should use to reach the client API (for example
        ``https://matrix.example.org``); without it ``/.well-known/matrix/client`` answers 404."""
        self._base_url = public_base_url.rstrip("/") if public_base_url else None
        self._versions = list(versions)
        self._unstable = dict(UNSTABLE_FEATURES if unstable_features is None else unstable_features)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_matrix/client/versions", self.versions),
            web.get("/.well-known/matrix/client", self.well_known),
        ]

    async def versions(self, request: web.Request) -> web.Response:
        return web.json_response({"versions": self._versions, "unstable_features": self._unstable})

    async def well_known(self, request: web.Request) -> web.Response:
        if self._base_url is None:
            raise not_found("No client well-known is configured")
        # CS "Web Browser Clients": well-known must be readable cross-origin.
        return web.json_response(
            {"m.homeserver": {"base_url": self._base_url}},
            headers={"Access-Control-Allow-Origin": "*"},
        )
