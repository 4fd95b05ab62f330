"""The process's heap under floods of large reads. Standard library only.

asyncio reads a connection 256 KiB at a time: each read is a fresh buffer of that size,
cut down to what arrived. glibc's allocator serves such a buffer from ``mmap`` at first,
then, having seen one freed, raises its threshold for ``mmap`` (up to 32 MiB) and serves
the next ones from the heap, where they leave holes that are reused poorly: a server that
took one flood of large requests held more memory after each of the next ones (1,024
connections trickling 64 KiB bodies, three floods: 90, 134, then 149 MiB resident, past
the unit's ``MemoryMax=128M``). A fixed threshold keeps blocks of that size out of the
heap for good (73, 91, then 84 MiB); the cost is one ``mmap`` a large read, not measurable
in the bridge's throughput.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

_LOGGER = logging.getLogger("legacy_msi_credential.bridge")

#: glibc's ``mallopt`` parameter for the ``mmap`` threshold (malloc.h).
_M_MMAP_THRESHOLD = -3


def fix_mmap_threshold(threshold: int) -> bool:
    """Set glibc's ``mmap`` threshold to ``threshold`` bytes for this process, which also stops
    glibc from moving it; whether it was set (False where the C library is not glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        done = int(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        done = 0
    if not done:
        _LOGGER.debug("could not fix the allocator's mmap threshold; large reads may fragment the heap")
    return bool(done)
