"""glibc keeps freed heap blocks resident; `tune_host_allocator` makes large blocks go back.

The scenario is the one that grew the nano trainer ~1 GB per step: after one large block is freed,
glibc serves blocks up to 32 MiB from the heap, and one live block at the top pins every freed
block below it. Each case runs in a fresh interpreter (mallopt settings are per process); the
untuned case shows the scenario is real, so the tuned case's figure can fail."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from funasr_jax.host_memory import resident_bytes

PROBE = textwrap.dedent("""
    import sys, numpy as np
    from funasr_jax.host_memory import tune_host_allocator, resident_bytes
    if sys.argv[1] == "tuned":
        print("set", sorted(tune_host_allocator(env={})), file=sys.stderr)
    big = np.ones(1 << 18); del big              # a 2 MiB block freed: glibc raises its mmap threshold
    base = resident_bytes()
    blocks = [np.ones(196_608) for _ in range(400)]   # 400 x 1.5 MiB
    peak = resident_bytes()
    keep = blocks[-1]; del blocks                     # the newest block stays live
    print((peak - base) >> 20, (resident_bytes() - base) >> 20)
""")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or resident_bytes() is None,
                                reason="glibc and /proc are Linux's")


def _retained_mib(mode: str) -> tuple[int, int]:
    r = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    peak, after = map(int, r.stdout.split())
    return peak, after


def test_freed_blocks_stay_resident_without_tuning():
    peak, after = _retained_mib("plain")
    assert peak > 500 and after > 400, (peak, after)


def test_tuned_allocator_returns_freed_blocks():
    peak, after = _retained_mib("tuned")
    assert peak > 500 and after < 50, (peak, after)


def test_environment_settings_win():
    from funasr_jax.host_memory import tune_host_allocator
    assert tune_host_allocator(env={"MALLOC_MMAP_THRESHOLD_": "1", "MALLOC_ARENA_MAX": "4"}) == {}
