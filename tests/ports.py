"""Loopback ports for servers started by tests (and the benchmarks, through tests.interop.synapse)."""

import socket


def free_port() -> int:
    """An ephemeral port that was free a moment ago (bind to 0 and release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
