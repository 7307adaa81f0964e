"""The join gap: while a user of server 1 joins a room of server 0, the resident's user sends a message
between make_join and send_join (the proxy in front of server 0 holds the send_join until that message is
persisted). The outcome is reported as what it is (issue 21): in how many repeats the joiner's ``/messages``
served the gap event within GAP_TIMEOUT (a Synapse joiner often never gets it: the resident's dummy event
arrives while it is still persisting the join and is dropped as "for unknown room"), and, for the repeats
where it did, the time from the moment send_join was forwarded to the resident until it was readable."""

from __future__ import annotations

import asyncio
import time

from .base import Options, Pair, Recorder, describe
from .client import MxClient

GAP_TIMEOUT = 60.0
READABLE = "gap event readable (repeats where found)"


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
                rec.failure(READABLE, "s", f"setup: {describe(e)}")
                rec.tick()
            return
        found = 0
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
                        break
                    await asyncio.sleep(0.02)
                else:
                    found += 1
                    rec.value(
                        "gap event readable (repeats where found)", "s", time.perf_counter() - forwarded
                    )
            except Exception as e:
                rec.failure(READABLE, "s", describe(e))
            rec.tick()
        rec.value(f"gap event found within {GAP_TIMEOUT:.0f} s", "repeats", found, "", "higher")
        rec.note(f"gap event found within {GAP_TIMEOUT:.0f} s", "repeats", f"{found} of {opts.repeats}", "",
                 "higher")  # fmt: skip
