"""Federation: other servers' signing keys, the outbound queue (outbox and retry state), inbound
transaction answers, and PDUs held while a partial join completes."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..sql.deferred_pdus import DeferredPdu
from ..sql.engine import Txn
from ..sql.outbox import OutboxBatch, RetryState
from ..sql.pending_join_pdus import PendingPdu
from ..sql.server_keys import StoredKeyResponse

__all__ = [
    "DeferredPdu",
    "DeferredPduStorage",
    "InboundTxnStorage",
    "OutboxBatch",
    "OutboxStorage",
    "PendingJoinPduStorage",
    "PendingPdu",
    "RetryState",
    "ServerKeyStorage",
    "StoredKeyResponse",
]


class ServerKeyStorage(Protocol):
    """Matches ``ranvier.federation.keys.KeyStore``."""

    async def get_server_keys(
        self, server: str, key_ids: Collection[str]
    ) -> dict[str, StoredKeyResponse]: ...
    async def store_server_keys(
        self, server: str, keys_json: dict[str, Any], valid_until_ts: int
    ) -> None: ...


class OutboxStorage(Protocol):
    async def enqueue_pdus_txn(
        self,
        txn: Txn,
        destinations: Iterable[str],
        event_id: str,
        room_id: str,
        stream_ordering: int | None = None,
    ) -> None: ...
    async def enqueue_pdus(
        self, destinations: Iterable[str], event_id: str, room_id: str, stream_ordering: int | None = None
    ) -> None: ...
    async def enqueue_edu_txn(
        self,
        txn: Txn,
        destinations: Iterable[str],
        edu_type: str,
        content: dict[str, Any],
        coalesce_key: str | None = None,
    ) -> None: ...
    async def enqueue_edu(
        self,
        destinations: Iterable[str],
        edu_type: str,
        content: dict[str, Any],
        coalesce_key: str | None = None,
    ) -> None: ...
    async def next_batch(self, destination: str, max_pdus: int = 50, max_edus: int = 100) -> OutboxBatch: ...
    async def ack(
        self, destination: str, pdu_ids: Collection[int], edu_ids: Collection[int] = ()
    ) -> None: ...
    async def ack_batch(self, batch: OutboxBatch) -> None: ...
    async def room_progress(self, destination: str) -> dict[str, int]: ...
    async def last_successful(self) -> dict[str, int]: ...
    async def drop_destination(self, destination: str) -> None: ...
    async def pending_count(self, destination: str) -> int: ...
    async def room_backlogs(self, destination: str) -> dict[str, int]: ...
    async def pending_counts(self) -> dict[str, tuple[int, int]]: ...
    async def destinations_with_pending(self) -> list[str]: ...
    async def get_retry(self, destination: str) -> RetryState | None: ...
    async def get_all_retries(self) -> dict[str, RetryState]: ...
    async def set_retry(self, destination: str, state: RetryState) -> None: ...
    async def reset_retry(self, destination: str) -> None: ...


class InboundTxnStorage(Protocol):
    """The answer given to each (origin, transaction id), for retried transactions (raw JSON)."""

    async def get_response(self, origin: str, txn_id: str) -> dict[str, Any] | None: ...
    async def store_response(self, origin: str, txn_id: str, response: dict[str, Any]) -> None: ...
    async def prune_older_than(self, ts: int) -> int: ...


class PendingJoinPduStorage(Protocol):
    """PDUs received for a room while our join to it is in flight (raw PDU JSON)."""

    async def append(self, room_id: str, origin: str, pdu: dict[str, Any]) -> int: ...
    async def list_for_room(self, room_id: str, limit: int | None = None) -> list[PendingPdu]: ...
    async def delete(self, room_id: str, seqs: Collection[int]) -> None: ...
    async def delete_room(self, room_id: str) -> None: ...
    async def count_for_room(self, room_id: str) -> int: ...
    async def rooms_with_pending(self) -> list[str]: ...


class DeferredPduStorage(Protocol):
    """PDUs that could not be judged yet (a missing prev or auth event, an unreachable key server), with
    when to try each again (raw PDU JSON)."""

    async def add(
        self, event_id: str, room_id: str, origin: str, pdu: dict[str, Any], next_try_ts: int, max_rows: int
    ) -> bool: ...
    async def due(self, now_ts: int, limit: int = 100) -> list[DeferredPdu]: ...
    async def next_try_ts(self) -> int | None: ...
    async def reschedule(self, event_id: str, tries: int, next_try_ts: int) -> None: ...
    async def delete(self, event_id: str) -> None: ...
    async def count(self) -> int: ...


if TYPE_CHECKING:
    from ..sql.deferred_pdus import DeferredPduStore
    from ..sql.engine import Database
    from ..sql.inbound_txns import InboundTxnStore
    from ..sql.outbox import OutboxStore
    from ..sql.pending_join_pdus import PendingJoinPduStore
    from ..sql.server_keys import ServerKeyStore

    def _sql_classes_satisfy_the_protocols(db: Database) -> None:
        # Never called: mypy checks these assignments.
        _a: ServerKeyStorage = ServerKeyStore(db)
        _b: OutboxStorage = OutboxStore(db)
        _c: InboundTxnStorage = InboundTxnStore(db)
        _d: PendingJoinPduStorage = PendingJoinPduStore(db)
        _e: DeferredPduStorage = DeferredPduStore(db)
