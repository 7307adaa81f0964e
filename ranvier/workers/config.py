"""The ``workers:`` and ``redis:`` sections of homeserver.yaml (one file for every process).

A deployment without ``workers:`` is the single process it always was: it needs no Redis and may run on
SQLite. With workers, every process reads the same file and is started with ``--worker NAME``; the checks
here (``check_workers``) refuse the layouts that cannot work before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config_schema import setting

Role = Literal[
    "main",
    "client_reader",
    "event_persister",
    "federation_inbound",
    "federation_sender",
    "media",
    "background",
]

MAIN = "main"


@dataclass(kw_only=True)
class WorkerListener:
    bind: str = "127.0.0.1"
    port: int = setting(0, ge=0, le=65535)
    x_forwarded: bool = False
    # Federation listeners only: TLS as in listeners.federation (off when a proxy terminates TLS).
    tls: bool = False
    tls_certificate_path: str | None = None
    tls_private_key_path: str | None = None


@dataclass(kw_only=True)
class WorkerListeners:
    client: WorkerListener | None = None
    federation: WorkerListener | None = None
    metrics: WorkerListener | None = None


def _loopback(v: str) -> str:
    if not (v.startswith("127.") or v == "::1" or v == "localhost"):
        raise ValueError("the replication listener must bind a loopback address (127.0.0.0/8 or ::1)")
    return v


@dataclass(kw_only=True)
class ReplicationListener:
    # Internal HTTP between our processes (forwarded event sends): loopback only, authenticated with
    # workers.secret.
    bind: str = setting("127.0.0.1", check=_loopback)
    port: int = setting(0, ge=0, le=65535)


@dataclass(kw_only=True)
class WorkerInstance:
    role: Role
    # The main process keeps the top-level ``listeners:``; other roles serve only what is listed here.
    listeners: WorkerListeners = field(default_factory=WorkerListeners)
    replication: ReplicationListener | None = None


@dataclass(kw_only=True)
class Workers:
    secret: str = setting(min_length=16)
    instances: dict[str, WorkerInstance]
    # room -> persister by a stable hash of the room id (empty: the main process persists every room)
    event_persisters: list[str] = field(default_factory=list)
    # destination -> sender by a stable hash of the server name (empty: the main process sends)
    federation_senders: list[str] = field(default_factory=list)


def _redis_scheme(v: str) -> str:
    if not (v.startswith("redis://") or v.startswith("unix://")):
        raise ValueError("must start with redis:// or unix://")
    return v


@dataclass(kw_only=True)
class Redis:
    url: str = setting("redis://127.0.0.1:6379/0", check=_redis_scheme)
    # Channel prefix, so that two deployments may share one Redis.
    channel_prefix: str = "ranvier"


def check_workers(workers: Workers | None, redis: Redis | None, database_url: str) -> list[str]:
    """What is wrong with the layout, one message per problem naming the key (empty: fine)."""
    if workers is None:
        return []
    problems: list[str] = []
    instances = workers.instances
    if MAIN not in instances:
        problems.append("workers.instances: there must be an instance named 'main'")
    elif instances[MAIN].role != "main":
        problems.append("workers.instances.main.role: must be 'main'")
    for name, inst in instances.items():
        if name != MAIN and inst.role == "main":
            problems.append(f"workers.instances.{name}.role: only the instance named 'main' has role 'main'")
        if not name.replace("_", "").replace("-", "").isalnum():
            problems.append(f"workers.instances.{name}: names are letters, digits, '-' and '_'")
    if len(instances) > 1:
        if not database_url.startswith(("postgresql://", "postgres://")):
            problems.append("database.url: workers need PostgreSQL (SQLite is one process only)")
        if redis is None:
            problems.append("redis: required when workers.instances has more than 'main'")
    for key, names, role in (
        ("event_persisters", workers.event_persisters, "event_persister"),
        ("federation_senders", workers.federation_senders, "federation_sender"),
    ):
        if len(set(names)) != len(names):
            problems.append(f"workers.{key}: lists a name twice")
        for name in names:
            listed = instances.get(name)
            if listed is None:
                problems.append(f"workers.{key}: {name!r} is not in workers.instances")
            elif listed.role not in (role, "main"):
                problems.append(f"workers.{key}: {name!r} has role {listed.role!r}, not {role!r}")
            elif key == "event_persisters" and listed.replication is None:
                problems.append(
                    f"workers.instances.{name}.replication: an event persister needs a replication"
                    " listener (other processes forward event sends to it)"
                )
    main = instances.get(MAIN)
    if len(instances) > 1 and not workers.event_persisters and main is not None and main.replication is None:
        problems.append(
            "workers.instances.main.replication: with no event_persisters the main process persists"
            " every room, and other processes forward event sends to its replication listener"
        )
    background = [name for name, inst in instances.items() if inst.role == "background"]
    if len(background) > 1:
        problems.append(
            "workers.instances: at most one background instance (its jobs run once), not "
            + ", ".join(background)
        )
    for name, inst in instances.items():
        if inst.role == "event_persister" and name not in workers.event_persisters:
            problems.append(
                f"workers.instances.{name}: an event_persister not listed in workers.event_persisters"
            )
        if inst.role == "federation_sender" and name not in workers.federation_senders:
            problems.append(
                f"workers.instances.{name}: a federation_sender not listed in workers.federation_senders"
            )
    return problems
