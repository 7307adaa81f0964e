"""The request id of the request being served, carried by a contextvar, and on every log record.

The id is set by the access-log middleware for the duration of one request. asyncio copies the context into
every task created while serving it (persisting, sending to other servers), so their records carry the same
id and one grep for it tells the whole story of a request. Outside a request the field is ``-``.
"""

from __future__ import annotations

import itertools
import logging
from contextvars import ContextVar
from typing import Any

from aiohttp import web

from .redact import install_secret_guards

NO_REQUEST = "-"

current_request_id: ContextVar[str] = ContextVar("ranvier_request_id", default=NO_REQUEST)

_counter = itertools.count(1)

# Set by the client API's authenticator: (user id, device id) of the requester.
AUTHENTICATED_USER: web.RequestKey[tuple[str, str]] = web.RequestKey("ranvier.authenticated_user", tuple)
# Set with it when the request carries an appservice's as_token: the appservice's id.
AUTHENTICATED_APPSERVICE: web.RequestKey[str] = web.RequestKey("ranvier.authenticated_appservice", str)


def new_request_id(method: str) -> str:
    """Synapse's shape: the method and a per-process serial number (``PUT-1234``)."""
    return f"{method}-{next(_counter)}"


_installed = False


def install_record_factory() -> None:
    """Make every LogRecord carry ``record.request`` (the current request id), whatever logger or handler
    writes it, so that format strings and the JSON formatter can always use ``%(request)s``; and guard the
    loggers that would write secrets (``redact.install_secret_guards``). Idempotent."""
    global _installed
    install_secret_guards()
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request = current_request_id.get()
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


class RequestIdFilter(logging.Filter):
    """The same as a filter, for a dictConfig that wants it explicitly (``()``: this class): sets
    ``record.request`` when the record does not have it yet. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request"):
            record.request = current_request_id.get()
        return True
