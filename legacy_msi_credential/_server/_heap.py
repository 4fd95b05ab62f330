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
import logging
import platform

_LOGGER = logging.getLogger("legacy_msi_credential.bridge")

#: glibc's ``mallopt`` parameter for the ``mmap`` threshold (malloc.h).
_M_MMAP_THRESHOLD = -3

#: The largest threshold glibc takes (``HEAP_MAX_SIZE / 2`` on 64-bit systems).
_LARGEST = 32 * 1024 * 1024


def fix_mmap_threshold(threshold: int) -> bool:
    """Set glibc's ``mmap`` threshold to ``threshold`` bytes for this process, which also stops
    glibc from moving it; whether it was set (False where the C library is not glibc).

    The symbol is looked up in the running process (``dlopen(NULL)``), which has glibc
    loaded already: no search for the library, so no ``ldconfig`` run. A block of that size
    or more is a mapping of its own, a page at least: a received chunk kept alive costs a
    page while it waits (aiohttp's C parser copies bodies out of what it receives, so none
    is kept).

    Raises:
        ValueError: ``threshold`` is outside what glibc takes (1 byte to 32 MiB).
    """
    if not 0 < threshold <= _LARGEST:
        raise ValueError(f"mmap_threshold must be between 1 and {_LARGEST} bytes, not {threshold}")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, threshold))
    if not done:
        _LOGGER.debug("could not fix the allocator's mmap threshold; large reads may fragment the heap")
    return done
