"""The comparison workloads, by name. Each one runs against a fresh set of servers of one kind and drives
them only through the public client and federation APIs (see ``base.Workload``)."""

from __future__ import annotations

from .base import Workload


def all_workloads() -> dict[str, Workload]:
    # Imported here: bench.client_load imports this package's modules, so a module-level import would cycle.
    from bench.client_load import ClientLoad

    from .ingest import Ingest
    from .join_gap import JoinGap
    from .joins import RemoteJoin
    from .latency import MessageLatency

    return {w.name: w for w in (RemoteJoin(), Ingest(), MessageLatency(), JoinGap(), ClientLoad())}
