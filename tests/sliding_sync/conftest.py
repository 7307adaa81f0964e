"""The interop fixtures (a session-wide Synapse, a Ranvier server per test, an HTTP session)."""

from tests.interop.conftest import pytest_configure, ranvier, session, synapse

__all__ = ["pytest_configure", "ranvier", "session", "synapse"]
