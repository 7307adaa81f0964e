"""What each process role runs, decided once from the config and the instance name.

``RolePlan`` is data: app.py asks it which listeners to open and which subsystems to start. With no
``workers:`` section the main process runs everything, as a single-process deployment always has. With
workers, a subsystem that has a dedicated role elsewhere (event persisters, federation senders, a
background instance) is left to that role, and the main process keeps only what nobody else runs.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .config import MAIN, WorkerInstance, WorkerListener, Workers


@dataclass(frozen=True)
class RolePlan:
    name: str
    role: str
    # Listeners this process opens (the main process uses the top-level listeners:).
    client_listener: bool
    federation_listener: bool
    replication_listener: bool
    # Outbound federation queues: all destinations, or only this sender's shard (see ``owns_destination``).
    federation_sender: bool
    # Timers and queues that must run in exactly one process: push delivery, appservice pushes, presence
    # timeouts, device-list resends, deferred PDUs, queued remote joins, retention and purges. (Gap filling
    # and partial-state resyncs run on each room's persister.)
    background: bool
    # The instance persists the rooms hashed to it (or every room, when there are no event persisters).
    persists_events: bool
    workers: Workers | None

    @property
    def multi_process(self) -> bool:
        return self.workers is not None and len(self.workers.instances) > 1

    @property
    def instance(self) -> WorkerInstance | None:
        return None if self.workers is None else self.workers.instances.get(self.name)

    def listener(self, kind: str) -> WorkerListener | None:
        """A non-main instance's own listener of ``kind`` (client, federation, metrics)."""
        inst = self.instance
        return None if inst is None else getattr(inst.listeners, kind)

    def persister_of(self, room_id: str) -> str:
        """The instance that persists ``room_id``'s events."""
        if self.workers is None or not self.workers.event_persisters:
            return MAIN
        return pick(self.workers.event_persisters, room_id)

    def sender_of(self, destination: str) -> str:
        if self.workers is None or not self.workers.federation_senders:
            return MAIN
        return pick(self.workers.federation_senders, destination)

    def owns_destination(self, destination: str) -> bool:
        return self.sender_of(destination) == self.name

    def owns_room(self, room_id: str) -> bool:
        return self.persister_of(room_id) == self.name

    def presence_owner(self) -> str:
        """The instance that owns presence and runs the periodic jobs: the background one, else main."""
        if self.workers is None:
            return MAIN
        background = [n for n, i in sorted(self.workers.instances.items()) if i.role == "background"]
        return background[0] if background else MAIN

    def event_writers(self) -> list[str]:
        """Every instance that may write to the event stream. Each room is written by its persister only
        (the other processes hand their writes over; one that persists another's room is counted, see
        ``MultiWriterPositions.owns``), but every instance takes part in the stream positions (one that
        persists nothing only declares): the check counts a stray write, it does not prevent it."""
        if self.workers is None:
            return [MAIN]
        return sorted(self.workers.instances)


def pick(names: Sequence[str], key: str) -> str:
    """A stable choice of one of ``names`` for ``key``: the same on every process and across restarts
    (Python's ``hash`` is salted per process, so it cannot be used). Rendezvous hashing, so adding a name
    moves only the keys that go to it."""
    return max(names, key=lambda name: hashlib.sha256(f"{name}\x00{key}".encode()).digest())


def plan_for(workers: Workers | None, name: str = MAIN) -> RolePlan:
    """The plan of instance ``name``; raises KeyError for a name the config does not list."""
    if workers is None or len(workers.instances) <= 1:
        if name != MAIN:
            raise KeyError(name)
        return RolePlan(MAIN, "main", True, True, False, True, True, True, workers)
    inst = workers.instances[name]
    roles = {i.role for i in workers.instances.values()}
    role = inst.role
    replication = inst.replication is not None
    if role == "main":
        return RolePlan(
            name,
            role,
            client_listener=True,
            federation_listener=True,
            replication_listener=replication,
            federation_sender=not workers.federation_senders,
            background="background" not in roles,
            persists_events=not workers.event_persisters,
            workers=workers,
        )
    return RolePlan(
        name,
        role,
        client_listener=inst.listeners.client is not None,
        federation_listener=inst.listeners.federation is not None,
        replication_listener=replication,
        federation_sender=role == "federation_sender",
        background=role == "background",
        persists_events=role == "event_persister",
        workers=workers,
    )


def config_for_instance(config: Any, plan: RolePlan) -> Any:
    """The config as instance ``plan.name`` sees it: a non-main instance listens where its own
    ``listeners:`` say (the top-level listeners are the main process's)."""
    inst = plan.instance
    if inst is None or plan.role == "main":
        return config
    listeners = copy.deepcopy(config.listeners)
    own = inst.listeners
    if own.client is not None:
        listeners.client = replace(
            listeners.client, bind=own.client.bind, port=own.client.port, x_forwarded=own.client.x_forwarded
        )
    if own.federation is not None:
        listeners.federation = replace(
            listeners.federation,
            bind=own.federation.bind,
            port=own.federation.port,
            x_forwarded=own.federation.x_forwarded,
            tls=own.federation.tls,
            tls_certificate_path=own.federation.tls_certificate_path,
            tls_private_key_path=own.federation.tls_private_key_path,
        )
    if own.metrics is None:
        listeners.metrics = replace(listeners.metrics, enabled=False)
    else:
        listeners.metrics = replace(
            listeners.metrics,
            enabled=True,
            bind=own.metrics.bind,
            port=own.metrics.port,
            x_forwarded=own.metrics.x_forwarded,
        )
    return replace(config, listeners=listeners)
