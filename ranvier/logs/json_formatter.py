"""One JSON object per line, for log shippers (Loki, Elasticsearch, Vector...).

Use it from a dictConfig formatter: ``(): ranvier.logs.json_formatter.JsonFormatter``. Each line holds
``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, ``request`` (the request id, or ``-``), and for
request lines the fields of the line under ``access`` (``ranvier.logs.access``); an exception adds
``exc_info`` (the formatted traceback).
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request": getattr(record, "request", "-"),
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            out["access"] = access
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)
