"""log_config (Synapse's key): a dictConfig YAML applied by a real ``ranvier run``, written by
``generate-config``, re-read on SIGHUP; one that cannot load stops the start (exit 2, file and problem
named)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tests.e2e.ranvier_process import RanvierProcess

CUSTOM = """\
version: 1
formatters:
  mine:
    format: "REQ|%(request)s|%(name)s|%(levelname)s|%(message)s"
  json:
    (): ranvier.logs.json_formatter.JsonFormatter
handlers:
  requests:
    class: logging.FileHandler
    filename: "{path}"
    formatter: {formatter}
loggers:
  ranvier.access:
    level: INFO
    handlers: [requests]
    propagate: false
root:
  level: WARNING
"""


def log_config_of(data_dir: Path) -> Path:
    config = yaml.safe_load((data_dir / "homeserver.yaml").read_text())
    return data_dir / config["log_config"]


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_generated_log_config_is_applied(tmp_path: Path) -> None:
    """generate-config writes a default log config beside homeserver.yaml; it loads and writes the rotating
    file it names."""
    proc = RanvierProcess.create(tmp_path)
    log_config = log_config_of(tmp_path)
    assert log_config.parent == tmp_path and log_config.exists()
    script = (
        "import logging, sys\n"
        "from ranvier.logs.configure import apply_log_config\n"
        "apply_log_config(sys.argv[1])\n"
        "logging.getLogger('ranvier.access.client').info('a request line')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(log_config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ranvier.access.client [-] a request line" in done.stderr  # console
    (line,) = lines_of(tmp_path / "homeserver.log")  # and the rotating file
    assert line.endswith("INFO ranvier.access.client [-] a request line")
    del proc


def test_request_lines_land_in_the_configured_file_and_sighup_rereads(tmp_path: Path) -> None:
    proc = RanvierProcess.create(tmp_path)
    text_log, json_log = tmp_path / "requests.log", tmp_path / "requests.jsonl"
    log_config = log_config_of(tmp_path)
    log_config.write_text(CUSTOM.format(path=text_log, formatter="mine"))
    proc.start()
    try:
        assert get(proc.client_url + "/_matrix/client/versions") == 200
        assert get(proc.client_url + "/_matrix/client/v3/sync?access_token=not-a-real-one") == 401
        deadline = time.monotonic() + 20
        # The line is written once the answer is sent: it may follow the client's read by a moment.
        while "/sync" not in text_log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        versions, sync = lines_of(text_log)[-2:]
        assert versions.startswith("REQ|GET-")
        rid, name, level, message = versions.split("|")[1:]
        assert (name, level) == ("ranvier.access.client", "INFO")
        assert message.startswith(f'{rid} 127.0.0.1 - "GET /_matrix/client/versions" 200 ')
        assert '"GET /_matrix/client/v3/sync?access_token=<redacted>" 401 ' in sync
        assert "not-a-real-one" not in text_log.read_text()

        # SIGHUP: the file is read again (now JSON lines to another file).
        log_config.write_text(CUSTOM.format(path=json_log, formatter="json"))
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
        while not lines_of(json_log) and time.monotonic() < deadline:
            get(proc.client_url + "/_matrix/client/versions")
            time.sleep(0.05)
        entry = json.loads(lines_of(json_log)[0])
        assert entry["logger"] == "ranvier.access.client"
        assert entry["access"]["path"] == "/_matrix/client/versions"
        assert entry["access"]["status"] == 200
        assert entry["request"] == entry["access"]["request_id"]
    finally:
        assert proc.stop() == 0


def run(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ranvier", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_log_config_that_cannot_load_stops_the_start(tmp_path: Path) -> None:
    RanvierProcess.create(tmp_path)
    log_config = log_config_of(tmp_path)
    log_config.write_text(
        "version: 1\nhandlers:\n  h:\n    class: logging.NoSuchHandler\nroot:\n  handlers: [h]\n"
    )
    done = run(tmp_path / "homeserver.yaml")
    assert done.returncode == 2
    assert str(log_config) in done.stderr and "NoSuchHandler" in done.stderr

    log_config.write_text("handlers: [unclosed\n")
    done = run(tmp_path / "homeserver.yaml")
    assert done.returncode == 2
    assert str(log_config) in done.stderr and "not valid YAML" in done.stderr

    log_config.unlink()
    done = run(tmp_path / "homeserver.yaml")
    assert done.returncode == 2
    assert str(log_config) in done.stderr and "cannot read" in done.stderr


def test_an_otel_environment_that_cannot_be_served_stops_the_start(tmp_path: Path) -> None:
    RanvierProcess.create(tmp_path)
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "zipkin"}
    done = subprocess.run(
        [sys.executable, "-m", "ranvier", "run", "-c", str(tmp_path / "homeserver.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2
    assert "OTEL_TRACES_EXPORTER='zipkin'" in done.stderr
