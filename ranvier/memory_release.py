"""Give the memory freed during start-up back to the operating system (issue 21: idle RSS), and keep what
start-up leaves out of the garbage collector's way.

Starting a server allocates and frees a good deal (configuration parsing, migrations, the TLS certificate,
the first queries); glibc's allocator keeps freed chunks in its heaps, where they count in the resident
set until reused. ``malloc_trim(0)`` returns every whole free page (not only the top of the heap). Called
once when the server has started; where the C library has no ``malloc_trim`` (musl, macOS) it does nothing.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)


def release_freed_memory() -> bool:
    """Trim the C allocator's heaps; True when it released something."""
    import ctypes  # once per process: not worth a module-level import

    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter is linked with
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    released = bool(trim(0))
    logger.debug("malloc_trim after start-up: %s", "released memory" if released else "nothing to release")
    return released


def settle_after_start() -> None:
    """Once the server has started: collect start-up's garbage, then freeze what is left (modules,
    configuration, routes, the first caches), which lives as long as the process, so that the collector's
    full collections, set off by the garbage of traffic (inbound PDUs: tens of thousands of short-lived
    containers a second), no longer walk it each time; then give freed memory back (bench/README.md,
    issue 21: the full collections of a ``bench ingest`` run took about a third less time)."""
    gc.collect()  # nothing collectable is frozen: a frozen cycle would never be freed
    gc.freeze()
    release_freed_memory()
