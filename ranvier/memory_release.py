"""Give the memory freed during start-up back to the operating system (issue 21: idle RSS).

Starting a server allocates and frees a good deal (configuration parsing, migrations, the TLS certificate,
the first queries); glibc's allocator keeps freed chunks in its heaps, where they count in the resident
set until reused. ``malloc_trim(0)`` returns every whole free page (not only the top of the heap). Called
once when the server has started; where the C library has no ``malloc_trim`` (musl, macOS) it does nothing.
"""

from __future__ import annotations

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
