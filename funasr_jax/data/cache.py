"""`SharedCache`: the one in-process cache of the data pipeline (plans, noise, waveforms, features).

Bounded by entry count and / or bytes (numpy arrays held by the values), least recently used
entry evicted first, safe to share between grain's threads, and pickled empty (each grain
worker process fills its own). A cached value is shared by every reader: callers store arrays
made read-only (`frozen`) so that no reader can change what the others see.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["MIB", "SharedCache", "frozen", "nbytes"]

MIB = 1 << 20


def nbytes(value) -> int:
    """Bytes of the numpy arrays in `value` (an array, or a tuple / list holding some); 0 for others."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    return 0


def frozen(x: np.ndarray) -> np.ndarray:
    """`x` marked read-only (the same array, not a copy), for storing in a shared cache."""
    x.flags.writeable = False
    return x


class SharedCache:
    """A small LRU dict shared by grain threads.

    max_items: at most this many entries (None: no count limit). max_bytes: at most this many
    bytes of arrays (`nbytes`) over all entries (None: no byte limit; 0: stores nothing). A value
    larger than max_bytes on its own is not stored. `hits` / `misses` count `get` results.
    """

    def __init__(self, max_items: int | None = None, max_bytes: int | None = None):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self._items: dict = {}
        self._sizes: dict = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __getstate__(self):
        return {"max_items": self.max_items, "max_bytes": self.max_bytes}

    def __setstate__(self, d):
        self.__init__(d["max_items"], d.get("max_bytes"))

    def __len__(self) -> int:
        return len(self._items)

    @property
    def enabled(self) -> bool:
        return self.max_bytes != 0 and self.max_items != 0

    def get(self, key):
        """The cached value (now the most recently used) or None."""
        with self.lock:
            return self._get(key)

    def put(self, key, value) -> None:
        with self.lock:
            self._put(key, value)

    def get_or_make(self, key, make):
        """The cached value, else `make()` computed under the lock (threads wait for one result)."""
        with self.lock:
            value = self._get(key)
            if value is None:
                value = make()
                self._put(key, value)
            return value

    def _get(self, key):
        value = self._items.pop(key, None)
        if value is None:
            self.misses += 1
            return None
        self._items[key] = value  # re-insert: dict order is the recency order
        self.hits += 1
        return value

    def _put(self, key, value) -> None:
        size = nbytes(value) if self.max_bytes is not None else 0
        if not self.enabled or (self.max_bytes is not None and size > self.max_bytes):
            return
        if key in self._items:
            self._drop(key)
        while self._items and ((self.max_items is not None and len(self._items) >= self.max_items)
                               or (self.max_bytes is not None and self.bytes + size > self.max_bytes)):
            self._drop(next(iter(self._items)))
        self._items[key] = value
        self._sizes[key] = size
        self.bytes += size

    def _drop(self, key) -> None:
        del self._items[key]
        self.bytes -= self._sizes.pop(key)
