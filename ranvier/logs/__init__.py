"""The operator's view: request lines per listener, the request id on every log record written while serving
a request, the logging configuration (Synapse's ``log_config``) and a JSON-lines formatter.

- ``context``: the request id (a contextvar) and the LogRecord factory that puts it on every record.
- ``access``: the request-log middleware (``ranvier.access.<listener>``) and path redaction.
- ``configure``: loading, applying and re-applying (SIGHUP) a dictConfig YAML; the default one.
- ``json_formatter``: one JSON object per line, for Loki, Elasticsearch and other shippers.
"""
