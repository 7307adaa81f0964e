"""Fan-out without head-of-line blocking (issue 21): one message to many servers, some of which never answer,
refuse connections, or accept a connection and then say nothing (not even a TLS handshake). The healthy
destinations must receive every message while the bad ones are still stuck; a sender that drained its
destinations one after another (or shared one queue) would keep the healthy ones waiting for the
transaction timeout, which is set far beyond the test's wait so such a sender fails here."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from ranvier.federation import sender as sender_module
from tests.federation.test_sender import Node, Remote, cert_pair, eventually, node, remotes, shared_room
from tests.ports import free_port

__all__ = ["cert_pair", "node", "remotes"]  # the fixtures, imported for this module's tests


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A listening socket nobody accepts from: connections complete in the kernel, then nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    port = free_port()
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        sock.close()


async def test_a_message_reaches_healthy_servers_while_others_hang_or_refuse(
    node: Node, remotes: Callable[[], Remote], blackhole: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No repeat on a second connection: the hung remote is to stay hung for the whole test.
    monkeypatch.setattr(sender_module, "HEDGE_AFTER_SECONDS", 3600.0)
    hung, refusing = remotes(), remotes()  # ``refusing`` is never started: connections are refused
    healthy = [remotes() for _ in range(6)]
    hung.gate.clear()
    for r in (hung, *healthy):
        await r.start()
    # Transactions wait up to an hour for an answer: a blocked healthy destination cannot catch up in time.
    sender = await node.open(transaction_timeout=3600.0)
    await sender.start()
    assert node.persister is not None
    # The hung and refusing servers come first in the room, so a sender walking destinations in join order
    # would meet them before the healthy ones.
    room = await shared_room(node.storage, node.persister, "fanout", hung, refusing, *healthy)
    bob = f"@bob:{blackhole}"
    await room.send(bob, "m.room.member", {"membership": "join"}, state_key=bob)

    ids = await room.messages(3)

    async def all_healthy_have(expected: list[str]) -> None:
        for r in healthy:
            await eventually(lambda: r.delivered == expected, f"every message at {r.server_name}")  # noqa: B023

    await all_healthy_have(ids)
    # ... while the bad destinations are still stuck or failing: nothing reached them.
    assert hung.in_flight == 1 and not hung.delivered
    assert sender.worker_state(hung.server_name) == "sending"
    assert sender.worker_state(blackhole) == "sending"
    assert await node.storage.outbox.pending_count(refusing.server_name) == 3

    # More messages still flow to the healthy servers, with the stuck transactions still open.
    more = await room.messages(2)
    await all_healthy_have(ids + more)
    assert hung.in_flight == 1 and hung.max_in_flight == 1
    hung.gate.set()  # once it answers, the hung server gets everything in order
    await eventually(lambda: hung.delivered == ids + more, "everything at the formerly hung server")
