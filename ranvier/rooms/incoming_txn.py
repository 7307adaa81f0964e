"""``PUT /send/{txnId}`` as the room layer sees it: limits, deduplication, PDUs, then EDUs.

A retried transaction (same origin and txn id) is answered with the stored response and not processed
again. The response is stored, and returned, only after every accepted PDU is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..protocol.errors import ProtocolError
from ..storage.protocols.composite import HasInboundTxns
from .incoming import IncomingPdus
from .incoming_edus import IncomingEdus

MAX_PDUS = 50  # S2S "Transactions": "at most 50 PDUs and 100 EDUs"
MAX_EDUS = 100


class BadTransaction(ProtocolError):
    errcode = "M_BAD_JSON"


class InboundTransactions:
    def __init__(self, storage: HasInboundTxns, pdus: IncomingPdus, edus: IncomingEdus) -> None:
        self._storage = storage
        self.pdus = pdus
        self.edus = edus
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Told of every origin that sends us a transaction (the app wires the sender's mark_reachable: a
        # server that talks to us is up, so a back-off towards it can end now).
        self.origin_seen: Callable[[str], None] | None = None
        # Told of each transaction's per-PDU results (the metrics count them by outcome and reason).
        self.on_results: Callable[[dict[str, dict[str, str]]], None] | None = None
        # Several processes (ranvier.workers): PDUs handed to the process that persists their room.
        self.route_pdus: Callable[[str, list[Any]], Awaitable[dict[str, dict[str, str]]]] | None = None

    async def on_send(self, origin: str, txn_id: str, body: Any) -> dict[str, Any]:
        if self.origin_seen is not None:
            self.origin_seen(origin)
        if not isinstance(body, dict):
            raise BadTransaction("the transaction must be a JSON object")
        pdus, edus = body.get("pdus", []), body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise BadTransaction("pdus and edus must be lists")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise BadTransaction(f"a transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs")
        key = (origin, txn_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:  # a retry racing the original waits for its answer
                stored = await self._storage.inbound_txns.get_response(origin, txn_id)
                if stored is not None:
                    return stored
                receive = self.pdus.receive_pdus if self.route_pdus is None else self.route_pdus
                results = await receive(origin, pdus)
                if self.on_results is not None:
                    self.on_results(results)
                await self.edus.receive_edus(origin, edus)
                response = {"pdus": results}
                await self._storage.inbound_txns.store_response(origin, txn_id, response)
                return response
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]
