"""The wall clock as Matrix timestamps: milliseconds since the Unix epoch (``origin_server_ts``, ``ts``,
``valid_until_ts``). Modules that need a clock they can replace in tests take one as a constructor
argument instead."""

import time


def now_ms() -> int:
    return int(time.time() * 1000)
