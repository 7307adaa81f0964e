"""``ranvier generate-config --workers N``: the split of N processes over the roles, and the files it writes
(homeserver.yaml that loads and passes the workers checks, nginx upstreams at the processes' listeners, the
systemd template and a target naming every instance, a compose file with a service per instance)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ranvier.cli import main as cli_main
from ranvier.config import load_config
from ranvier.workers.config import check_workers
from ranvier.workers.layout import split_workers
from ranvier.workers.routing import parse_nginx_maps


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, {}),
        (1, {"client_reader": 1}),
        (2, {"client_reader": 1, "event_persister": 1}),
        (3, {"client_reader": 1, "event_persister": 1, "federation_sender": 1}),
        (6, {"client_reader": 2, "event_persister": 2, "federation_sender": 1, "federation_inbound": 1}),
        (
            9,
            {
                "client_reader": 2,
                "event_persister": 2,
                "federation_sender": 2,
                "federation_inbound": 1,
                "media": 1,
                "background": 1,
            },
        ),
    ],
)
def test_split(n: int, expected: dict[str, int]) -> None:
    assert dict(split_workers(n)) == expected


def test_split_grows_one_process_at_a_time_and_keeps_one_background() -> None:
    previous = split_workers(0)
    for n in range(1, 40):
        counts = split_workers(n)
        assert sum(counts.values()) == n
        assert all(counts[role] >= previous[role] for role in previous)  # adding a worker moves nobody
        assert counts["background"] <= 1  # periodic jobs run in exactly one process
        previous = counts
    assert split_workers(39)["client_reader"] > split_workers(39)["federation_inbound"]
    with pytest.raises(ValueError):
        split_workers(-1)


def test_negative_workers_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(
        ["generate-config", "--server-name", "example.org", "--data-dir", str(tmp_path), "--workers", "-1"]
    )
    assert code == 2 and "negative" in capsys.readouterr().err
    assert not (tmp_path / "homeserver.yaml").exists()


@pytest.mark.parametrize("n", [1, 6, 9])
def test_generate_config_writes_a_working_layout(tmp_path: Path, n: int) -> None:
    code = cli_main(
        ["generate-config", "--server-name", "example.org", "--data-dir", str(tmp_path), "--workers", str(n),
         "--database-url", "postgresql://ranvier@127.0.0.1:5432/ranvier", "--client-port", "8008",
         "--federation-port", "8448"]
    )  # fmt: skip
    assert code == 0
    config = load_config(tmp_path / "homeserver.yaml")
    assert config.workers is not None and config.redis is not None
    assert check_workers(config.workers, config.redis, config.database.url) == []
    instances = config.workers.instances
    assert len(instances) == n + 1 and instances["main"].role == "main"
    counts = split_workers(n)
    for role, count in counts.items():
        assert sum(1 for i in instances.values() if i.role == role) == count
    assert len(config.workers.event_persisters) == counts["event_persister"]
    assert len(config.workers.federation_senders) == counts["federation_sender"]
    # The main process sits behind nginx: its own ports are internal, and it trusts X-Forwarded-For.
    assert config.listeners.client.port != 8008 and config.listeners.client.x_forwarded
    ports = [config.listeners.client.port, config.listeners.federation.port]
    for inst in instances.values():
        ports += [ls.port for ls in (inst.listeners.client, inst.listeners.federation) if ls is not None]
        ports += [inst.replication.port] if inst.replication is not None else []
    assert len(ports) == len(set(ports)), "every listener has a port of its own"

    # nginx: the public ports, and upstreams at exactly the listeners of the roles it routes to.
    nginx = (tmp_path / "ranvier-workers.conf").read_text()
    assert "listen 8008;" in nginx and "listen 8448 ssl;" in nginx
    upstreams = dict(re.findall(r"upstream (\w+) \{(.*?)\}", nginx, re.S))
    servers = {name: re.findall(r"server 127\.0\.0\.1:(\d+);", body) for name, body in upstreams.items()}
    assert servers["ranvier_main_client"] == [str(config.listeners.client.port)]
    assert servers["ranvier_main_federation"] == [str(config.listeners.federation.port)]
    readers = [i.listeners.client for i in instances.values() if i.role == "client_reader"]
    assert servers["ranvier_client_reader_client"] == [str(r.port) for r in readers if r is not None]
    for names in parse_nginx_maps(nginx).values():
        assert {upstream for _, _, upstream in names} <= set(upstreams)

    # systemd: the template runs any instance, the target starts them all.
    unit = (tmp_path / "systemd" / "ranvier@.service").read_text()
    assert f"-m ranvier run -c {(tmp_path / 'homeserver.yaml').resolve()} --worker %i" in unit
    assert "Restart=always" in unit
    target = (tmp_path / "systemd" / "ranvier.target").read_text()
    assert sorted(re.findall(r"ranvier@(\w+)\.service", target)) == sorted(instances)

    # compose: a service per instance running it, restarted when it dies.
    compose = yaml.safe_load((tmp_path / "compose.yaml").read_text())["services"]
    for name in instances:
        service = compose[f"ranvier-{name}"]
        assert service["command"][-2:] == ["--worker", name] and service["restart"] == "unless-stopped"


def test_generate_config_keeps_existing_files_without_force(tmp_path: Path) -> None:
    args = ["generate-config", "--server-name", "example.org", "--data-dir", str(tmp_path), "--workers", "2"]
    assert cli_main(args) == 0
    (tmp_path / "ranvier-workers.conf").write_text("# edited by the operator\n")
    assert cli_main(args) == 2  # homeserver.yaml exists
    assert cli_main([*args, "--force"]) == 0
    assert (tmp_path / "ranvier-workers.conf").read_text() != "# edited by the operator\n"


def test_systemd_units_pass_systemd_analyze(tmp_path: Path) -> None:
    """The generated template unit (as an instance) and target pass ``systemd-analyze verify``."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    args = ["generate-config", "--server-name", "example.org", "--data-dir", str(tmp_path), "--workers", "3"]
    assert cli_main(args) == 0
    units = tmp_path / "systemd"
    for unit in ("ranvier@reader1.service", "ranvier.target"):
        result = subprocess.run(
            [analyze, "verify", "--man=no", str(units / unit)], capture_output=True, text=True, timeout=60
        )
        # Complaints about the host (no ranvier user, no PostgreSQL unit here) are not the file's fault.
        problems = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if line.strip() and "not found" not in line and "does not exist" not in line
        ]
        assert result.returncode == 0 and not problems, (unit, result.stdout, result.stderr)
