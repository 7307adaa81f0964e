"""Outbound IP blocklist: keep federation traffic (and anything a remote name resolves to) off internal
networks. Checked after name resolution, on every address we would connect to.

By default every address that is not globally routable is blocked (Python's ``is_global`` follows the IANA
special-purpose registries: private, loopback, link-local, shared, documentation, benchmarking ranges),
plus multicast. Operators can block more ranges and allow some back; tests allow loopback.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class BlockedAddress(OSError):
    """We refuse to connect to this address."""


def _normalise(ip: IpAddress) -> IpAddress:
    # An IPv4-mapped IPv6 address reaches the IPv4 host: judge it as that host.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class IpBlocklist:
    def __init__(
        self,
        *,
        extra_blocked: Iterable[str] = (),
        allowed: Iterable[str] = (),
        allow_loopback: bool = False,
        block_non_global: bool = True,
    ) -> None:
        self._blocked: list[IpNetwork] = [ipaddress.ip_network(n, strict=False) for n in extra_blocked]
        self._allowed: list[IpNetwork] = [ipaddress.ip_network(n, strict=False) for n in allowed]
        if allow_loopback:
            self._allowed.extend(LOOPBACK)
        self._block_non_global = block_non_global

    @classmethod
    def allow_all(cls) -> IpBlocklist:
        return cls(block_non_global=False)

    def is_blocked(self, address: str | IpAddress) -> bool:
        ip = _normalise(
            ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
        )
        if any(ip in net for net in self._allowed):
            return False
        if any(ip in net for net in self._blocked):
            return True
        return self._block_non_global and (not ip.is_global or ip.is_multicast)

    def check(self, address: str | IpAddress) -> None:
        if self.is_blocked(address):
            raise BlockedAddress(f"IP address {address} is blocked for outbound federation")


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class BlocklistingResolver(AbstractResolver):
    """An aiohttp resolver that drops blocked addresses, so a hostname (from DNS, SRV or a .well-known
    redirect) can never lead a connection to a blocked network. aiohttp does not consult the resolver for
    IP-literal URLs: the caller checks those itself with ``IpBlocklist.check``."""

    def __init__(self, blocklist: IpBlocklist, inner: AbstractResolver | None = None) -> None:
        from aiohttp.resolver import DefaultResolver

        self._blocklist = blocklist
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if not self._blocklist.is_blocked(r["host"])]
        if not allowed:
            raise BlockedAddress(f"every address of {host} is blocked for outbound federation")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
