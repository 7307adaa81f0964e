"""The scenario fixtures (servers stopped at teardown, one HTTP session), shared with tests/scenarios."""

from tests.scenarios.conftest import servers, session

__all__ = ["servers", "session"]
