"""Loopback ports for servers started by tests (and the benchmarks, through tests.interop.synapse).

A port the kernel picks for ``bind(0)`` comes from the ephemeral range, the same range it draws
the local ports of outgoing connections from: between releasing such a port and the server binding
it, any client socket of the suite could take it (seen in CI: EADDRINUSE on a federation listener
started a few milliseconds after free_port() returned). So ports are handed out from below the
ephemeral range, where the kernel never places an outgoing connection, each at most once per process.
"""

import os
import random
import socket
import threading

_LOW = 10_000
_handed_out: set[int] = set()
_lock = threading.Lock()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port below the ephemeral range, free now and not handed out before by this process."""
    high = _ephemeral_low()
    if high - _LOW < 1_000:
        # An unusual range leaves no room below it: fall back to the kernel's choice.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    rng = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "big"))
    with _lock:
        for _ in range(10_000):
            port = rng.randrange(_LOW, high)
            if port in _handed_out or not _bindable(port):
                continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {_LOW}-{high}")
