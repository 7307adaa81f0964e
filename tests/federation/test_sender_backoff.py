"""The sender's back-off (issue 13, item 3): bounded, and a proof of reachability resets it to zero
instead of counting as one more try, so a peer that keeps talking to us while we cannot reach it (a
one-way partition) cannot push it up; and the catch-up sends a long backlog whole, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from ranvier.federation import sender as sender_module
from ranvier.metrics import Metrics
from ranvier.storage.sql.outbox import RetryState
from tests.federation.test_sender import Node, Remote, cert_pair, eventually, node, remotes, shared_room

__all__ = ["cert_pair", "node", "remotes"]  # the fixtures, imported for this module's tests


async def _retry(node: Node, destination: str) -> Any:
    return await node.storage.outbox.get_retry(destination)


async def test_the_back_off_is_bounded_and_a_reachability_proof_resets_it(
    node: Node, remotes: Callable[[], Remote]
) -> None:
    remote = remotes()  # not listening: connections are refused
    metrics = Metrics()
    sender = await node.open(initial_backoff=0.05, max_backoff=0.4, metrics=metrics)
    await sender.start()
    assert node.persister is not None
    room = await shared_room(node.storage, node.persister, "backoff", remote)
    ids = await room.messages(3)

    async def at_the_bound() -> bool:
        retry = await _retry(node, remote.server_name)
        return retry is not None and retry.failure_count >= 6

    await eventually(at_the_bound, "six failures in a row")
    retry = await _retry(node, remote.server_name)
    assert retry.retry_interval == 400  # 50, 100, 200, 400, 400, ...: doubled up to the bound only
    labels = {"destination": remote.server_name}
    assert metrics.registry.get_sample_value("ranvier_federation_retry_interval_seconds", labels) == 0.4
    failures = metrics.registry.get_sample_value("ranvier_federation_consecutive_failures", labels)
    assert failures is not None and failures >= 6

    # The peer talks to us (still unreachable): the back-off starts from zero, not from 400 ms doubled.
    before = retry.failure_count
    sender.mark_reachable(remote.server_name)

    async def failed_after_the_reset() -> bool:
        r = await _retry(node, remote.server_name)
        return r is not None and r.failure_count < before

    await eventually(failed_after_the_reset, "a failure counted from zero")
    retry = await _retry(node, remote.server_name)
    assert retry.retry_interval <= 100
    for _ in range(20):  # a chatty peer, unreachable: every proof resets, none escalates
        sender.mark_reachable(remote.server_name)
        retry = await _retry(node, remote.server_name)
        assert retry is None or retry.retry_interval <= 100
        await eventually(lambda: _failed_since(node, remote.server_name), "the next failure")

    await remote.start()
    sender.mark_reachable(remote.server_name)
    await eventually(lambda: set(ids) <= set(remote.delivered), "the queue once the link works")
    assert await _retry(node, remote.server_name) is None
    assert metrics.registry.get_sample_value("ranvier_federation_retry_interval_seconds", labels) == 0


async def _failed_since(node: Node, destination: str) -> bool:
    return await _retry(node, destination) is not None


async def test_a_backlog_after_an_outage_is_sent_whole_and_in_order(
    node: Node, remotes: Callable[[], Remote]
) -> None:
    remote = remotes()
    await remote.start()
    sender = await node.open()
    assert node.persister is not None
    room = await shared_room(node.storage, node.persister, "backlog", remote)
    ids = await room.messages(180)
    # An outage recorded before this (re)start: the first send is a catch-up, under the default cap.
    await node.storage.outbox.set_retry(remote.server_name, RetryState(0, 100, 9))
    await sender.start()
    await eventually(lambda: len(remote.delivered) >= 180, "the whole backlog")
    assert remote.delivered == ids
    assert [len(v) for v in remote.accepted.values()] == [50, 50, 50, 30]


async def test_a_transaction_stuck_in_flight_is_sent_again_when_the_destination_reaches_us(
    node: Node, remotes: Callable[[], Remote], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blackholed link keeps a transaction waiting for the whole request timeout; once the destination
    shows it is up, the transaction is sent again at once, with the same id."""
    monkeypatch.setattr(sender_module, "STALE_ATTEMPT_SECONDS", 0.2)
    remote = remotes()
    remote.gate.clear()  # requests are held open: the answer never comes
    await remote.start()
    sender = await node.open()
    await sender.start()
    assert node.persister is not None
    room = await shared_room(node.storage, node.persister, "stuck", remote)
    ids = await room.messages(2)
    await eventually(lambda: remote.in_flight == 1, "a transaction held open")
    await asyncio.sleep(0.3)  # older than the stale threshold
    sender.mark_reachable(remote.server_name)
    await eventually(lambda: len(remote.requests) >= 2, "the transaction sent again")
    assert remote.requests[0] == remote.requests[1]  # the same transaction, not a new one
    remote.gate.set()
    await eventually(lambda: set(ids) <= set(remote.delivered), "delivery")
    await eventually(lambda: sender.is_idle(remote.server_name), "the worker to finish")
    assert await _retry(node, remote.server_name) is None


async def test_a_destination_that_comes_back_is_found_by_probing_before_its_back_off_ends(
    node: Node, remotes: Callable[[], Remote]
) -> None:
    """Nobody proves the destination reachable (it never talks to us) and its back-off is a minute; the
    sender probes it (GET /version, every PROBE_INTERVAL_SECONDS) because it could not be reached at all,
    and sends the queue as soon as it answers: well within the back-off."""
    remote = remotes()  # not listening yet: connections are refused
    sender = await node.open(initial_backoff=60, max_backoff=60)
    await sender.start()
    assert node.persister is not None
    room = await shared_room(node.storage, node.persister, "probe", remote)
    ids = await room.messages(3)

    async def backing_off() -> bool:
        retry = await _retry(node, remote.server_name)
        return retry is not None and retry.retry_interval == 60_000

    await eventually(backing_off, "a failure and a minute's back-off")
    await remote.start()
    # 20 s (eventually's deadline) is a third of the back-off: only the probe can have ended it.
    await eventually(lambda: remote.delivered == ids, "the queue, after the destination came back")
    assert await _retry(node, remote.server_name) is None


async def test_a_transaction_never_answered_is_repeated_on_another_connection_once_the_destination_answers(
    node: Node, remotes: Callable[[], Remote], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A healed partition leaves the connection that carried a transaction dead (its bytes were
    swallowed) and nothing proves the destination up (it cannot reach us either, or is quiet). Once the
    transaction has waited HEDGE_AFTER_SECONDS and the destination answers a probe, the same transaction
    goes out again on another connection; the first answer delivers it, long before the request timeout
    (a minute here; eventually gives up after 20 s), and no failure is recorded."""
    monkeypatch.setattr(sender_module, "HEDGE_AFTER_SECONDS", 0.3)
    remote = remotes()
    remote.swallow = 1
    await remote.start()
    sender = await node.open(transaction_timeout=60)
    await sender.start()
    assert node.persister is not None
    room = await shared_room(node.storage, node.persister, "hedge", remote)
    ids = await room.messages(3)
    await eventually(lambda: remote.delivered == ids, "delivery on the second connection")
    # The swallowed transaction was sent twice with the same id; every other one once.
    assert remote.requests[0] == remote.requests[1] and len(remote.requests) == len(remote.accepted) + 1
    assert remote.in_flight == 1  # the first request is still unanswered
    await eventually(lambda: sender.is_idle(remote.server_name), "the worker to finish")
    assert await _retry(node, remote.server_name) is None
