"""Fixtures of the spaces/knock/upgrade tests: the scenario suite's servers (real in-process Ranvier
homeservers on loopback) and HTTP session."""

from __future__ import annotations

from tests.scenarios.conftest import servers, session

__all__ = ["servers", "session"]
