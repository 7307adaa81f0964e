"""Server discovery: S2S "Server discovery" > "Resolving server names".

Turns a server name into where to connect (``connect_host``, a hostname or IP, and ``port``), the ``Host``
header to send, and the name the TLS certificate must match (also sent as SNI; ``None`` for IP literals,
where no SNI is sent and the certificate must name the IP). Turning ``connect_host`` into addresses is left
to the HTTP client's resolver, which applies the IP blocklist to whatever the names resolve to.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    # dnspython (about 3 MB of RSS) is imported at the first SRV lookup (``_resolver``): a server that has
    # not yet looked up a named peer (an idle one, one federating with IP literals) does not carry it.
    import dns.asyncresolver

from ranvier.protocol.canonical_json import parse_json
from ranvier.protocol.errors import CanonicalJsonError
from ranvier.protocol.identifiers import is_valid_server_name

from .http_read import read_capped
from .ip_blocklist import is_ip_literal

log = logging.getLogger(__name__)

DEFAULT_PORT = 8448
# Step 3's cache rules: honour Cache-Control, 24 h when absent, at most 48 h; errors up to an hour, with
# exponential back-off for repeated failures (we start at 5 minutes and double).
WELL_KNOWN_DEFAULT_TTL = 24 * 3600
WELL_KNOWN_MAX_TTL = 48 * 3600
WELL_KNOWN_ERROR_TTL_MIN = 5 * 60
WELL_KNOWN_ERROR_TTL_MAX = 3600
WELL_KNOWN_MAX_BYTES = 64 * 1024
WELL_KNOWN_TIMEOUT = 10.0

_MAX_AGE_RE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


@dataclass(frozen=True)
class ResolvedServer:
    server_name: str
    connect_host: str  # IP literal without brackets, or a hostname to resolve with A/AAAA
    port: int
    host_header: str
    tls_server_name: str | None  # certificate name and SNI; None: an IP literal, verify the IP

    @property
    def url_host(self) -> str:
        return f"[{self.connect_host}]" if ":" in self.connect_host else self.connect_host


def split_host_port(name: str) -> tuple[str, int | None]:
    """Split ``host[:port]``; IPv6 literals keep their brackets off in the result."""
    if name.startswith("["):
        end = name.index("]")
        host, rest = name[1:end], name[end + 1 :]
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, sep, port = name.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return name, None


def _host_header(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _ttl_from_cache_control(header: str | None) -> float:
    if header:
        lowered = header.lower()
        if "no-store" in lowered or "no-cache" in lowered:
            return 0.0
        m = _MAX_AGE_RE.search(header)
        if m:
            return float(min(int(m.group(1)), WELL_KNOWN_MAX_TTL))
    return float(WELL_KNOWN_DEFAULT_TTL)


@dataclass
class _WellKnownEntry:
    m_server: str | None  # None: the lookup failed (an "error response" in the spec's sense)
    expires_at: float
    failures: int = 0


class ServerDiscovery:
    def __init__(
        self,
        *,
        dns_resolver: dns.asyncresolver.Resolver | None = None,
        well_known_port: int = 443,
        clock: Callable[[], float] = time.monotonic,
        host_overrides: dict[str, str] | None = None,
    ) -> None:
        # ``well_known_port`` exists so that tests can serve .well-known on loopback without port 443.
        # ``host_overrides`` (config federation.host_overrides, test-only): server name -> "host:port" to
        # connect to instead of resolving; the Host header stays the server name.
        self._dns = dns_resolver
        self._host_overrides = dict(host_overrides or {})
        self._well_known_port = well_known_port
        self._clock = clock
        self._well_known: dict[str, _WellKnownEntry] = {}

    def _resolver(self) -> dns.asyncresolver.Resolver:
        if self._dns is None:
            import dns.asyncresolver
            import dns.resolver

            self._dns = dns.asyncresolver.Resolver()
            self._dns.cache = dns.resolver.LRUCache()  # SRV answers are cached for their TTL
        return self._dns

    async def resolve(self, server_name: str, session: aiohttp.ClientSession) -> ResolvedServer:
        """Resolve ``server_name``; ``session`` is used for the .well-known request (it should carry the
        blocklisting resolver and TLS settings of federation traffic)."""
        if not is_valid_server_name(server_name):
            raise ValueError(f"invalid server name {server_name!r}")
        override = self._host_overrides.get(server_name)
        if override is not None:
            o_host, o_port = split_host_port(override)
            tls_name = None if is_ip_literal(o_host) else o_host
            return ResolvedServer(server_name, o_host, o_port or DEFAULT_PORT, server_name, tls_name)
        host, port = split_host_port(server_name)
        # Step 1: an IP literal, with its port or 8448.
        if is_ip_literal(host):
            return ResolvedServer(server_name, host, port or DEFAULT_PORT, server_name, None)
        # Step 2: a hostname with an explicit port.
        if port is not None:
            return ResolvedServer(server_name, host, port, server_name, host)
        # Step 3: .well-known delegation.
        delegated = await self._get_well_known(host, session)
        if delegated is not None:
            return await self._resolve_delegated(server_name, delegated)
        # Steps 4 and 5: SRV for the server's own hostname; the certificate and Host stay <hostname>.
        srv = await self._lookup_srv(host)
        if srv is not None:
            return ResolvedServer(server_name, srv[0], srv[1], host, host)
        # Step 6: the hostname itself on 8448.
        return ResolvedServer(server_name, host, DEFAULT_PORT, host, host)

    async def _resolve_delegated(self, server_name: str, delegated: str) -> ResolvedServer:
        d_host, d_port = split_host_port(delegated)
        # 3.1: an IP literal; the Host header is the IP (with the port if one was given).
        if is_ip_literal(d_host):
            return ResolvedServer(
                server_name, d_host, d_port or DEFAULT_PORT, _host_header(d_host, d_port), None
            )
        # 3.2: a hostname with a port.
        if d_port is not None:
            return ResolvedServer(server_name, d_host, d_port, _host_header(d_host, d_port), d_host)
        # 3.3 and 3.4: SRV for the delegated hostname.
        srv = await self._lookup_srv(d_host)
        if srv is not None:
            return ResolvedServer(server_name, srv[0], srv[1], d_host, d_host)
        # 3.5: the delegated hostname on 8448.
        return ResolvedServer(server_name, d_host, DEFAULT_PORT, d_host, d_host)

    async def _get_well_known(self, host: str, session: aiohttp.ClientSession) -> str | None:
        now = self._clock()
        entry = self._well_known.get(host)
        if entry is not None and entry.expires_at > now:
            return entry.m_server
        m_server, ttl = await self._fetch_well_known(host, session)
        if m_server is None:
            failures = (entry.failures + 1) if entry is not None and entry.m_server is None else 1
            ttl = min(WELL_KNOWN_ERROR_TTL_MIN * 2 ** (failures - 1), WELL_KNOWN_ERROR_TTL_MAX)
            self._well_known[host] = _WellKnownEntry(None, now + ttl, failures)
        else:
            self._well_known[host] = _WellKnownEntry(m_server, now + ttl)
        return m_server

    async def _fetch_well_known(self, host: str, session: aiohttp.ClientSession) -> tuple[str | None, float]:
        port = "" if self._well_known_port == 443 else f":{self._well_known_port}"
        url = f"https://{host}{port}/.well-known/matrix/server"
        try:
            # aiohttp follows 30x redirects and stops redirect loops at max_redirects.
            async with session.get(
                url, max_redirects=5, timeout=aiohttp.ClientTimeout(total=WELL_KNOWN_TIMEOUT)
            ) as resp:
                if resp.status != 200:
                    return None, 0.0
                body = await read_capped(resp, WELL_KNOWN_MAX_BYTES)
                ttl = _ttl_from_cache_control(resp.headers.get("Cache-Control"))
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.debug("well-known lookup for %s failed: %s", host, e)
            return None, 0.0
        if len(body) > WELL_KNOWN_MAX_BYTES:
            return None, 0.0
        try:
            # "servers parsing the response should assume that the body is JSON regardless of type"
            parsed = parse_json(body, strict=False)
        except CanonicalJsonError:
            return None, 0.0
        m_server = parsed.get("m.server") if isinstance(parsed, dict) else None
        if not isinstance(m_server, str) or not is_valid_server_name(m_server):
            return None, 0.0
        return m_server, ttl

    async def _lookup_srv(self, host: str) -> tuple[str, int] | None:
        import dns.exception
        import dns.rdatatype
        import dns.resolver

        # _matrix-fed first (since v1.8), then the deprecated _matrix.
        for service in ("_matrix-fed._tcp", "_matrix._tcp"):
            try:
                answer = await self._resolver().resolve(f"{service}.{host}", dns.rdatatype.SRV)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
                continue
            except dns.exception.DNSException as e:
                log.debug("SRV lookup %s.%s failed: %s", service, host, e)
                continue
            picked = _pick_srv(
                [(r.priority, r.weight, r.target.to_text(omit_final_dot=True), r.port) for r in answer]
            )
            if picked is not None:
                return picked
        return None


def _pick_srv(records: list[tuple[int, int, str, int]]) -> tuple[str, int] | None:
    """RFC 2782 selection: lowest priority, then weighted random. A lone "." target means "no service"."""
    usable = [r for r in records if r[2] not in ("", ".")]
    if not usable:
        return None
    best = min(r[0] for r in usable)
    candidates = [r for r in usable if r[0] == best]
    total = sum(r[1] for r in candidates)
    if total == 0:
        chosen = random.choice(candidates)
    else:
        point = random.uniform(0, total)
        chosen = candidates[-1]
        for r in candidates:
            point -= r[1]
            if point <= 0:
                chosen = r
                break
    return chosen[2], chosen[3]
