"""The join gap: while a user of server 1 joins a room of server 0, the resident's user sends a message
between make_join and send_join (the proxy in front of server 0 holds the send_join until that message is
persisted). Timed from the moment send_join is forwarded to the resident until the joiner's ``/messages``
serves the message sent in the gap. A joiner that never gets it fails the repeat."""

from __future__ import annotations

import asyncio
import time

from .base import Options, Pair, Recorder, describe
from .client import MxClient

GAP_TIMEOUT = 60.0


class JoinGap:
    name = "join_gap"
    title = "Join gap: send_join to the gap event readable by the joiner"
    servers = 2
    proxied = True

    def steps(self, opts: Options) -> int:
        return opts.repeats

    async def run(self, pair: Pair, opts: Options, rec: Recorder) -> None:
        resident, joiner_hs = pair.servers
        try:
            alice = await MxClient.register(pair.session, resident.client_url, "alice")
        except Exception as e:
            for _ in range(opts.repeats):
                rec.failure("gap event readable", "s", f"setup: {describe(e)}")
                rec.tick()
            return
        for r in range(opts.repeats):
            try:
                room_id = await alice.create_room(name="gap")
                await alice.send_text(room_id, "before the join")
                joiner = await MxClient.register(pair.session, joiner_hs.client_url, "joiner")
                gap_text = f"in the gap {r}"

                async def in_the_gap(room_id: str = room_id, text: str = gap_text) -> None:
                    await alice.send_text(room_id, text)

                pair.proxy.arm(in_the_gap)
                await joiner.join(room_id, resident.server_name)
                forwarded = pair.proxy.send_join_forwarded_at
                if forwarded is None:
                    raise RuntimeError("the join did not pass the proxy's send_join")
                deadline = time.monotonic() + GAP_TIMEOUT
                while gap_text not in await joiner.texts_back(room_id, 20):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"gap event not readable by the joiner after {GAP_TIMEOUT:.0f}s")
                    await asyncio.sleep(0.02)
                rec.value("gap event readable", "s", time.perf_counter() - forwarded)
            except Exception as e:
                rec.failure("gap event readable", "s", describe(e))
            rec.tick()
