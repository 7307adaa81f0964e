"""The scenario fixtures (in-process servers on loopback, an HTTP session)."""

from tests.scenarios.conftest import servers, session

__all__ = ["servers", "session"]
