"""Secrets out of paths before they are logged: the values of secret query parameters are replaced.

Pure (stdlib only), so that every layer that logs a path (the inbound request log, the federation client's
outbound lines) can use it. Also the guards on third-party loggers that would write secrets at DEBUG.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_plus

REDACTED = "<redacted>"

# Query parameters whose values never reach a log: tokens of every kind, passwords and MACs, whatever the
# endpoint (compared case-insensitively, after percent-decoding the name).
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "refresh_token",
        "token",
        "login_token",
        "logintoken",
        "password",
        "new_password",
        "client_secret",
        "secret",
        "shared_secret",
        "mac",
        "nonce",
        "sig",
        "signature",
        "hs_token",
        "as_token",
        "registration_token",
        "session",
    }
)


def redact_path(raw_path: str) -> str:
    """``raw_path`` (path and query, as sent) with the value of every secret query parameter replaced."""
    path, sep, query = raw_path.partition("?")
    if not sep:
        return raw_path
    parts = []
    for item in query.split("&"):
        name, eq, _value = item.partition("=")
        if eq and unquote_plus(name).lower() in SECRET_PARAMS:
            parts.append(f"{name}={REDACTED}")
        else:
            parts.append(item)
    return f"{path}?{'&'.join(parts)}"


class DropStatementTraces(logging.Filter):
    """aiosqlite logs every statement with its parameters at DEBUG ("executing functools.partial(...)"):
    access tokens being looked up, password hashes, whole events. Those records are dropped at the logger,
    whatever level an operator's log_config gives it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_THIRD_PARTY_STATEMENT_LOGGERS = ("aiosqlite",)


def install_secret_guards() -> None:
    """Attach the filters above to the loggers they guard. Idempotent; filters on a logger survive a later
    ``dictConfig`` (which replaces handlers, not filters)."""
    for name in _THIRD_PARTY_STATEMENT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropStatementTraces) for f in logger.filters):
            logger.addFilter(DropStatementTraces())
