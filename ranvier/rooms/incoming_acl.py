"""Server ACLs (``m.room.server_acl``): may a server take part in a room?

The order of the checks is the event schema's ("The ACLs are applied ... in the following order"); globs
follow APX "Glob-style matching" (``*`` any run of characters, ``?`` exactly one), case-insensitively, on the
server name without its port.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

ACL_KEY = ("m.room.server_acl", "")


def _host_of(server_name: str) -> str:
    """The server name without the port (``[::1]:8448`` -> ``[::1]``, ``a.b:80`` -> ``a.b``)."""
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[: end + 1] if end != -1 else server_name
    return server_name.rsplit(":", 1)[0] if ":" in server_name else server_name


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _matches_any(host: str, patterns: object) -> bool:
    if not isinstance(patterns, list):
        return False
    return any(isinstance(p, str) and _glob(p).fullmatch(host) is not None for p in patterns)


def server_allowed_by_acl(server_name: str, acl_content: Mapping[str, Any] | None) -> bool:
    """Whether ``server_name`` may take part, given the content of the room's current ACL event."""
    if acl_content is None:
        return True  # 1. no m.room.server_acl in the room state: allow
    host = _host_of(server_name)
    # 2. IP literals are denied when allow_ip_literals is present and false (defaults to true otherwise)
    if acl_content.get("allow_ip_literals") is False and _is_ip_literal(host):
        return False
    if _matches_any(host, acl_content.get("deny")):
        return False  # 3. deny list
    # 4. allow list; 5. otherwise deny (a missing allow list denies everyone)
    return _matches_any(host, acl_content.get("allow"))
