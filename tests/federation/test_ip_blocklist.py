from __future__ import annotations

import pytest

from ranvier.federation.ip_blocklist import BlockedAddress, IpBlocklist


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "2001:db8::1",
        "ff02::1",
    ],
)
def test_internal_addresses_are_blocked_by_default(address: str) -> None:
    blocklist = IpBlocklist()
    assert blocklist.is_blocked(address)
    with pytest.raises(BlockedAddress):
        blocklist.check(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    IpBlocklist().check(address)


def test_allow_loopback_only_opens_loopback() -> None:
    blocklist = IpBlocklist(allow_loopback=True)
    assert not blocklist.is_blocked("127.0.0.1")
    assert not blocklist.is_blocked("127.1.2.3")
    assert not blocklist.is_blocked("::1")
    assert blocklist.is_blocked("10.0.0.1")
    assert blocklist.is_blocked("192.168.0.1")


def test_configured_ranges() -> None:
    blocklist = IpBlocklist(extra_blocked=["8.8.8.0/24"], allowed=["10.1.0.0/16"])
    assert blocklist.is_blocked("8.8.8.8")
    assert not blocklist.is_blocked("8.8.4.4")
    assert not blocklist.is_blocked("10.1.2.3")
    assert blocklist.is_blocked("10.2.0.1")
