"""Logging configuration: Synapse's ``log_config`` (a Python logging dictConfig YAML), or ``log_level``.

``apply_log_config`` loads and applies the file, raising ``LogConfigError`` naming the file and the problem
(the CLI turns it into exit code 2 before anything starts). SIGHUP applies it again (``reload``): a file
that has become invalid is reported and the running configuration kept.

One deviation from a bare ``logging.config.dictConfig``: ``disable_existing_loggers`` defaults to false,
since by the time the file is applied (and every time it is re-read) Ranvier's module loggers exist, and
Python's default would silence them all.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from pathlib import Path
from typing import Any

import yaml

from .context import install_record_factory

DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request)s] %(message)s"

# Written by ``ranvier generate-config`` beside homeserver.yaml; {log_file} is an absolute path.
DEFAULT_LOG_CONFIG = """\
# Ranvier logging: a standard Python logging dictConfig
# (https://docs.python.org/3/library/logging.config.html#logging-config-dictschema), as Synapse's log_config.
# %(request)s is the id of the request being served ("-" outside requests): grep for it to see everything
# one request did. Request lines are logged by ranvier.access.client, ranvier.access.federation,
# ranvier.access.metrics and (requests we send) ranvier.access.outbound_federation. SIGHUP re-reads this file.
version: 1
disable_existing_loggers: false

formatters:
  precise:
    format: "%(asctime)s %(levelname)s %(name)s [%(request)s] %(message)s"
  # One JSON object per line (for Loki, Elasticsearch, ...): use it in a handler instead of precise.
  json:
    (): ranvier.logs.json_formatter.JsonFormatter

handlers:
  console:
    class: logging.StreamHandler
    formatter: precise
    stream: ext://sys.stderr
  file:
    class: logging.handlers.RotatingFileHandler
    formatter: precise
    filename: "{log_file}"
    maxBytes: 104857600   # 100 MiB per file
    backupCount: 10
    encoding: utf8

loggers:
  # Set to WARNING to drop the request lines.
  ranvier.access:
    level: INFO

root:
  level: INFO
  handlers: [console, file]
"""


class LogConfigError(Exception):
    pass


def render_default_log_config(log_file: Path) -> str:
    return DEFAULT_LOG_CONFIG.replace("{log_file}", str(log_file))


def load_log_config(path: str | Path) -> dict[str, Any]:
    """Read and check the shape of a dictConfig YAML; ``LogConfigError`` names the file and the problem."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise LogConfigError(f"log_config {path}: cannot read it: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise LogConfigError(f"log_config {path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise LogConfigError(f"log_config {path}: must be a YAML mapping (a logging dictConfig)")
    if data.get("version") != 1:
        raise LogConfigError(f"log_config {path}: 'version: 1' is required (logging dictConfig schema)")
    data.setdefault("disable_existing_loggers", False)
    return data


def apply_log_config(path: str | Path) -> None:
    """Load ``path`` and make it the logging configuration of this process."""
    install_record_factory()
    data = load_log_config(path)
    try:
        logging.config.dictConfig(data)
    except (ValueError, TypeError, AttributeError, ImportError, OSError) as e:
        # dictConfig wraps most problems in ValueError("Unable to configure handler 'file'") with the
        # cause chained: report both.
        cause = f": {e.__cause__}" if e.__cause__ is not None else ""
        raise LogConfigError(f"log_config {path}: {e}{cause}") from None


def apply_log_level(level: str) -> None:
    """No log_config: everything at ``level`` to stderr, with the request id."""
    install_record_factory()
    logging.basicConfig(level=getattr(logging, level), format=DEFAULT_FORMAT, stream=sys.stderr)


def reload(path: str | Path) -> bool:
    """SIGHUP: apply ``path`` again. A file that no longer loads is logged and the current setup kept."""
    try:
        apply_log_config(path)
    except LogConfigError as e:
        logging.getLogger(__name__).error("SIGHUP: logging configuration not reloaded: %s", e)
        return False
    logging.getLogger(__name__).info("SIGHUP: logging configuration re-read from %s", path)
    return True
