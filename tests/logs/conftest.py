"""Fixtures for the logging tests: the scenario tests' client session and servers (stopped at teardown)."""

from tests.scenarios.conftest import servers, session

__all__ = ["servers", "session"]
