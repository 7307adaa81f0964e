"""The chaos harness: ``python3 -m bench chaos`` (see bench/README.md, section "chaos").

N Ranvier processes on loopback, a TCP proxy on every federation link (``cluster``, ``proxy``), a user on
every server sending into one room (``workload``), SIGKILL and restarts, partitions and slow links from a
seeded schedule (``faults``); then, without any client paging, the invariants read from each server's
database (``check``): every acknowledged event is a timeline event on every server, ``/state`` is equal
everywhere, no txnId has two events, and events of different depths are in the same order everywhere.
``--soak SECONDS`` runs steady load without faults and reports RSS over time (``soak``).
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
