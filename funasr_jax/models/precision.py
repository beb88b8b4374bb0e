"""Matmul precision as a model field (`FunASRConfig.matmul_precision`).

The value is entered as `jax.default_matmul_precision(...)` around every model method, at trace
time, so it reaches XLA dots and the dots inside Pallas kernels (traced within the same scope)
alike:
- "default": the backend's fastest passes — f32 inputs run as TF32 on Ampere-or-newer GPUs and
  as bf16 passes on TPU; bf16 inputs are unaffected; CPU computes f32 exactly;
- "high": 3-pass bf16 on TPU / TF32 on GPU;
- "highest": full f32 everywhere (slowest; what parity tests against PyTorch use).
"""

from __future__ import annotations

import contextlib
import functools

import jax

MATMUL_PRECISIONS = ("default", "high", "highest")


def check_matmul_precision(name: str, field: str = "model.matmul_precision") -> str:
    """`name` if it is one of MATMUL_PRECISIONS, else ValueError naming `field`."""
    if name not in MATMUL_PRECISIONS:
        raise ValueError(f"{field}: unknown precision {name!r} (one of {list(MATMUL_PRECISIONS)})")
    return name


def matmul_precision(name: str | None):
    """Context manager: matmuls traced inside use precision `name` (None: leave JAX's setting)."""
    if name is None:
        return contextlib.nullcontext()
    return jax.default_matmul_precision(check_matmul_precision(name))


def with_matmul_precision(get_name):
    """Method decorator: runs the method under `matmul_precision(get_name(self))`."""
    def wrap(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            with matmul_precision(get_name(self)):
                return method(self, *args, **kwargs)
        return run
    return wrap
