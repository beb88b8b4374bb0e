"""Host (CPU) memory that goes back to the system: glibc malloc settings for XLA's buffers.

On the CPU backend every array and every step's temporaries come from the C allocator. With
glibc's defaults two things hold memory that is no longer used:
- the mmap threshold is dynamic: after a large block is freed, blocks up to 32 MiB come from the
  heap instead of their own mapping, and a heap page is only returned when everything above it is
  free, so each step's freed temporaries stay resident and the next step's land beside them
  (at the nano preset the resident size grew ~1 GB per step until the 24 GB machine killed it);
- each thread that contends for the allocator gets its own arena (up to 8 per core), each with
  its own high-water mark.
`tune_host_allocator` fixes the mmap threshold (blocks >= 1 MiB are mapped and unmapped on free)
and caps the arenas; `release_free_memory` hands free heap pages back (after compilation, which
leaves gigabytes of freed compiler memory behind at nano). Both are no-ops where glibc is absent
(macOS, musl) and where the user already set the equivalent `MALLOC_*_` environment variables.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_MMAP_THRESHOLD = -3  # mallopt parameter numbers from glibc's malloc.h
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 1 << 20
ARENA_MAX = 2

_libc = None


def _glibc():
    """The process's glibc (ctypes.CDLL) or None on other C libraries / platforms."""
    global _libc
    if _libc is None:
        if not sys.platform.startswith("linux"):
            _libc = False
        else:
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _libc = lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
            except OSError:
                _libc = False
    return _libc or None


def tune_host_allocator(env=None) -> dict:
    """Set glibc's mmap threshold to 1 MiB and its arena count to 2, unless the environment
    already sets MALLOC_MMAP_THRESHOLD_ / MALLOC_ARENA_MAX. Call once, early (before XLA's
    threads allocate). Returns {setting: value} of what was set ({} where nothing was)."""
    env = os.environ if env is None else env
    lib = _glibc()
    if lib is None:
        return {}
    done = {}
    if "MALLOC_MMAP_THRESHOLD_" not in env and lib.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1:
        done["mmap_threshold"] = MMAP_THRESHOLD_BYTES
    if "MALLOC_ARENA_MAX" not in env and lib.mallopt(_M_ARENA_MAX, ARENA_MAX) == 1:
        done["arena_max"] = ARENA_MAX
    return done


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system (glibc `malloc_trim(0)`); True if any were."""
    lib = _glibc()
    return bool(lib is not None and lib.malloc_trim(0))


def resident_bytes() -> int | None:
    """This process's resident set size in bytes (Linux /proc), or None where unreadable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
