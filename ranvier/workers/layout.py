"""Multi-process layouts: how ``ranvier generate-config --workers N`` splits N worker processes over roles,
and the files it writes for them (homeserver.yaml's ``workers:`` and ``redis:`` sections, the nginx routing
from ``routing.py``, systemd units and a compose file).

The deployment tests and the workers benchmark build their layouts with the same functions, with ports from
the test allocator, so what the tests run is what the generator writes.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from .routing import HttpRole, NginxLayout, render_nginx

WorkerRole = Literal[
    "client_reader", "event_persister", "federation_inbound", "federation_sender", "media", "background"
]

# Instance names are the role's short name and a number: reader1, persister2, ...
SHORT_NAMES: Final[dict[WorkerRole, str]] = {
    "client_reader": "reader",
    "event_persister": "persister",
    "federation_inbound": "inbound",
    "federation_sender": "sender",
    "media": "media",
    "background": "background",
}

# The order in which added processes are given roles. Client reads (/sync above all) are where a busy
# server spends its CPU, so readers come first; then a persister takes the event writes (state resolution,
# the persist transaction) off the main process; then a sender takes outbound federation. Inbound federation,
# media and background jobs get their own processes once the first three are covered. Past the list, the
# cycle adds readers, persisters and senders (rooms and destinations shard by hash over them).
_FIRST: Final[tuple[WorkerRole, ...]] = (
    "client_reader",
    "event_persister",
    "federation_sender",
    "client_reader",
    "event_persister",
    "federation_inbound",
    "federation_sender",
    "media",
    "background",
)
_CYCLE: Final[tuple[WorkerRole, ...]] = (
    "client_reader",
    "event_persister",
    "client_reader",
    "federation_sender",
    "federation_inbound",
)


def split_workers(n: int) -> Counter[WorkerRole]:
    """How many processes of each role N worker processes (besides main) become."""
    if n < 0:
        raise ValueError("the number of workers cannot be negative")
    counts: Counter[WorkerRole] = Counter()
    for index in range(n):
        role = _FIRST[index] if index < len(_FIRST) else _CYCLE[(index - len(_FIRST)) % len(_CYCLE)]
        counts[role] += 1
    return counts


@dataclass(frozen=True)
class Instance:
    name: str
    role: Literal["main"] | WorkerRole
    replication_port: int
    client_port: int | None = None  # client readers and media workers (main: listeners.client)
    federation_port: int | None = None  # federation inbound workers (main: listeners.federation)


@dataclass(frozen=True)
class Layout:
    """A deployment on one host (every process on ``bind``): nginx (or a test proxy) on the public ports
    routes to the processes' listeners."""

    server_name: str
    bind: str
    public_client_port: int
    public_federation_port: int
    main_client_port: int
    main_federation_port: int
    instances: tuple[Instance, ...]  # main first

    def of_role(self, role: str) -> list[Instance]:
        return [i for i in self.instances if i.role == role]

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.instances]

    def client_upstreams(self) -> dict[HttpRole, list[str]]:
        ups: dict[HttpRole, list[str]] = {"main": [f"{self.bind}:{self.main_client_port}"]}
        for role in ("client_reader", "media"):
            ports = [i.client_port for i in self.of_role(role) if i.client_port is not None]
            if ports:
                ups[role] = [f"{self.bind}:{p}" for p in ports]
        return ups

    def federation_upstreams(self) -> dict[HttpRole, list[str]]:
        ups: dict[HttpRole, list[str]] = {"main": [f"{self.bind}:{self.main_federation_port}"]}
        ports = [i.federation_port for i in self.of_role("federation_inbound") if i.federation_port]
        if ports:
            ups["federation_inbound"] = [f"{self.bind}:{p}" for p in ports]
        return ups

    def workers_section(self, secret: str, *, x_forwarded: bool = True) -> dict[str, Any]:
        """homeserver.yaml's ``workers:`` mapping (contract in ranvier/workers/config.py)."""
        instances: dict[str, Any] = {}
        for inst in self.instances:
            entry: dict[str, Any] = {"role": inst.role}
            listeners: dict[str, Any] = {}
            if inst.role != "main" and inst.client_port is not None:
                listeners["client"] = {
                    "bind": self.bind,
                    "port": inst.client_port,
                    "x_forwarded": x_forwarded,
                }
            if inst.role != "main" and inst.federation_port is not None:
                # TLS on the worker as on main's listener: other servers reach it through a TCP pass-through
                # or a proxy that re-encrypts (contrib/nginx).
                listeners["federation"] = {
                    "bind": self.bind,
                    "port": inst.federation_port,
                    "tls": True,
                    "tls_certificate_path": "tls.crt",
                    "tls_private_key_path": "tls.key",
                }
            if listeners:
                entry["listeners"] = listeners
            entry["replication"] = {"bind": self.bind, "port": inst.replication_port}
            instances[inst.name] = entry
        return {
            "secret": secret,
            "instances": instances,
            "event_persisters": [i.name for i in self.of_role("event_persister")],
            "federation_senders": [i.name for i in self.of_role("federation_sender")],
        }

    def nginx(self, tls_certificate: str, tls_certificate_key: str, listen_address: str | None = None) -> str:
        return render_nginx(
            NginxLayout(
                client_upstreams=self.client_upstreams(),
                federation_upstreams=self.federation_upstreams(),
                client_listen=self.public_client_port,
                federation_listen=self.public_federation_port,
                tls_certificate=tls_certificate,
                tls_certificate_key=tls_certificate_key,
                listen_address=listen_address,
            )
        )


def plan_layout(
    counts: Counter[WorkerRole] | dict[WorkerRole, int],
    *,
    server_name: str,
    next_port: Callable[[], int],
    public_client_port: int,
    public_federation_port: int,
    bind: str = "127.0.0.1",
) -> Layout:
    """Main plus ``counts`` workers, each listener on a port from ``next_port`` (a counter from a base port
    for generate-config, the loopback allocator in tests)."""
    main_client, main_federation = next_port(), next_port()
    instances = [Instance("main", "main", replication_port=next_port())]
    for role, short in SHORT_NAMES.items():
        for number in range(1, counts.get(role, 0) + 1):
            client = next_port() if role in ("client_reader", "media") else None
            federation = next_port() if role == "federation_inbound" else None
            instances.append(Instance(f"{short}{number}", role, next_port(), client, federation))
    return Layout(
        server_name=server_name,
        bind=bind,
        public_client_port=public_client_port,
        public_federation_port=public_federation_port,
        main_client_port=main_client,
        main_federation_port=main_federation,
        instances=tuple(instances),
    )


def _counter_from(base: int) -> Callable[[], int]:
    ports: Iterator[int] = iter(range(base, 65536))
    return lambda: next(ports)


def layout_for_workers(
    n: int, *, server_name: str, public_client_port: int, public_federation_port: int, internal_port_base: int
) -> Layout:
    """generate-config's layout: N workers split by ``split_workers``, internal ports counted up from
    ``internal_port_base`` (main's client, federation and replication listeners, then each worker's)."""
    return plan_layout(
        split_workers(n),
        server_name=server_name,
        next_port=_counter_from(internal_port_base),
        public_client_port=public_client_port,
        public_federation_port=public_federation_port,
    )


# -- homeserver.yaml --------------------------------------------------------------------------------------

_WORKERS_HEADER: Final = """
# -- Workers (generated by `ranvier generate-config --workers N`) ------------------------------------------
# Every process reads this file; start each with `ranvier run -c homeserver.yaml --worker NAME` (NAME one of
# the instances below; the systemd template ranvier@.service does it as ranvier@NAME). nginx (the generated
# ranvier-workers.conf) listens on the public ports and routes each request to the role that serves it
# (docs/workers.md). Workers need PostgreSQL (the one source of truth) and Redis (the replication bus).
"""


def workers_config_text(
    base_text: str, layout: Layout, *, database_url: str, redis_url: str, secret: str | None = None
) -> str:
    """``base_text`` (homeserver.yaml as ``render_config`` writes it for the main process's listeners) with
    PostgreSQL, the client listener behind the proxy, and the ``redis:`` and ``workers:`` sections."""
    sqlite_line = 'url: "sqlite:///homeserver.db"'
    proxied_line = "x_forwarded: false"
    if sqlite_line not in base_text or proxied_line not in base_text:
        raise ValueError("the base configuration is not the generated template")
    text = base_text.replace(sqlite_line, f"url: {_quoted(database_url)}", 1)
    # The first x_forwarded is the client listener's: requests arrive through nginx.
    text = text.replace(proxied_line, "x_forwarded: true", 1)
    section = {
        "redis": {"url": redis_url},
        "workers": layout.workers_section(secret or secrets.token_urlsafe(32)),
    }
    return text.rstrip("\n") + "\n" + _WORKERS_HEADER + yaml.safe_dump(section, sort_keys=False)


def _quoted(value: str) -> str:
    return yaml.safe_dump(value, default_style='"').strip().removesuffix("\n...")


# -- systemd and compose ----------------------------------------------------------------------------------


def render_systemd_unit(config_path: str, working_directory: str, python: str = "/usr/bin/python3") -> str:
    """The templated unit ``ranvier@.service``: ``systemctl start ranvier@reader1`` runs that instance; the
    supervisor restarts a process that dies (issue 22: "restarted by the operator's supervisor")."""
    return f"""\
[Unit]
Description=Ranvier Matrix homeserver, process %i
After=network-online.target postgresql.service redis-server.service
Wants=network-online.target
PartOf=ranvier.target

[Service]
Type=simple
User=ranvier
WorkingDirectory={working_directory}
ExecStart={python} -m ranvier run -c {config_path} --worker %i
# Any exit but a clean stop is restarted: nothing acknowledged is lost (every write is committed before it
# is acknowledged) and a restarted federation sender resumes its queues from the database.
Restart=always
RestartSec=1
KillSignal=SIGTERM
TimeoutStopSec=30

[Install]
WantedBy=ranvier.target
"""


def render_systemd_target(layout: Layout) -> str:
    """``ranvier.target``: starting it starts every instance of the layout."""
    wants = " ".join(f"ranvier@{name}.service" for name in layout.names)
    return f"""\
[Unit]
Description=Ranvier Matrix homeserver, all processes
Wants={wants}

[Install]
WantedBy=multi-user.target
"""


def render_compose(layout: Layout, config_dir: str = "./config", build_context: str | None = None) -> str:
    """A compose file running the layout: PostgreSQL, Redis, one service per instance (restarted when it
    dies) and nginx. Host networking keeps the loopback addresses of homeserver.yaml valid. The image is
    ``ranvier:local`` (built from contrib/compose/Dockerfile; ``build_context`` names the checkout to
    build it from, relative to the compose file)."""
    services: dict[str, Any] = {
        "postgres": {
            "image": "postgres:16",
            "network_mode": "host",
            "environment": {
                "POSTGRES_USER": "ranvier",
                "POSTGRES_PASSWORD": "ranvier",
                "POSTGRES_DB": "ranvier",
            },
            "volumes": ["pgdata:/var/lib/postgresql/data"],
            "restart": "unless-stopped",
        },
        "redis": {"image": "redis:7", "network_mode": "host", "restart": "unless-stopped"},
    }
    for name in layout.names:
        service: dict[str, Any] = {}
        if build_context is not None:
            service["build"] = {"context": build_context, "dockerfile": "contrib/compose/Dockerfile"}
        services[f"ranvier-{name}"] = service | {
            "image": "ranvier:local",
            "network_mode": "host",
            "command": ["run", "-c", "/data/homeserver.yaml", "--worker", name],
            "volumes": [f"{config_dir}:/data"],
            "depends_on": ["postgres", "redis"] if name == "main" else ["ranvier-main"],
            "restart": "unless-stopped",
        }
    services["nginx"] = {
        "image": "nginx:1.27",
        "network_mode": "host",
        "volumes": [
            f"{config_dir}/ranvier-workers.conf:/etc/nginx/conf.d/default.conf:ro",
            f"{config_dir}/tls.crt:/etc/ranvier/tls.crt:ro",
            f"{config_dir}/tls.key:/etc/ranvier/tls.key:ro",
        ],
        "depends_on": ["ranvier-main"],
        "restart": "unless-stopped",
    }
    header = "# Ranvier workers: generated by ranvier/workers/layout.py (render_compose) for the layout of\n"
    header += (
        "# `ranvier generate-config --workers N`; see docs/workers.md. The PostgreSQL service's user and\n"
    )
    header += "# password are ranvier: generate with --database-url postgresql://ranvier:ranvier@127.0.0.1:5432/ranvier\n"
    return header + yaml.safe_dump({"services": services, "volumes": {"pgdata": {}}}, sort_keys=False)


def write_layout_files(directory: Path, layout: Layout, config_path: Path, *, force: bool) -> list[Path]:
    """The files beside homeserver.yaml: nginx, the systemd template and target, a compose file."""
    files = {
        directory / "ranvier-workers.conf": layout.nginx(
            str((directory / "tls.crt").resolve()), str((directory / "tls.key").resolve())
        ),
        directory / "systemd" / "ranvier@.service": render_systemd_unit(
            str(config_path.resolve()), str(directory.resolve())
        ),
        directory / "systemd" / "ranvier.target": render_systemd_target(layout),
        directory / "compose.yaml": render_compose(layout, "."),
    }
    written = []
    for path, text in files.items():
        if path.exists() and not force:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


# -- the checked-in examples (contrib/, docs/workers.md) ---------------------------------------------------

EXAMPLE_WORKERS: Final = 6
DOCS_TABLE_BEGIN: Final = "<!-- routing table: generated from ranvier/workers/routing.py, do not edit -->"
DOCS_TABLE_END: Final = "<!-- end of routing table -->"


def example_layout() -> Layout:
    """The layout of the examples in contrib/: `ranvier generate-config --server-name example.org
    --workers 6` with the default ports."""
    return layout_for_workers(
        EXAMPLE_WORKERS,
        server_name="example.org",
        public_client_port=8008,
        public_federation_port=8448,
        internal_port_base=18000,
    )


def render_examples() -> dict[str, str]:
    """The example files under contrib/, by path from the repository root."""
    layout = example_layout()
    return {
        "contrib/nginx/ranvier-workers.conf": layout.nginx("/etc/ranvier/tls.crt", "/etc/ranvier/tls.key"),
        "contrib/systemd/ranvier@.service": render_systemd_unit(
            "/etc/ranvier/homeserver.yaml", "/var/lib/ranvier"
        ),
        "contrib/systemd/ranvier.target": render_systemd_target(layout),
        "contrib/compose/compose.yaml": render_compose(layout, "./config", build_context="../.."),
    }


def with_docs_table(docs: str, table: str) -> str:
    """docs/workers.md with the generated routing table between its markers replaced by ``table``."""
    begin, end = docs.index(DOCS_TABLE_BEGIN), docs.index(DOCS_TABLE_END)
    return docs[: begin + len(DOCS_TABLE_BEGIN)] + "\n" + table + docs[end:]


if __name__ == "__main__":
    # Regenerates the examples and the docs table after a change to routing.py or this module:
    # python3 -m ranvier.workers.layout (from the repository root).
    from .routing import render_markdown_table

    for relative, text in render_examples().items():
        Path(relative).parent.mkdir(parents=True, exist_ok=True)
        Path(relative).write_text(text)
        print(f"wrote {relative}")
    docs = Path("docs/workers.md")
    docs.write_text(with_docs_table(docs.read_text(), render_markdown_table()))
    print(f"wrote {docs}")
