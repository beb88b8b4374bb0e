"""Cross-lowering Pallas kernels for CUDA on a machine without a GPU, across JAX versions.

- jax 0.10.x lowers Triton kernels for `lowering_platforms=("cuda",)` as they are; jax >= 0.11
  asks for the target GPU (its compute capability picks the Triton features) and raises "No
  supported GPU devices found" unless an abstract GPU device is in context.
- The custom call's target name has been `__gpu$xla.gpu.triton`; `triton_calls` counts any
  custom call whose target names Triton, in the op syntax of either version, so a renamed target
  still counts and a kernel that lowered to something else (or nothing) does not.
"""

from __future__ import annotations

import contextlib
import re

import jax

TARGET_GPU = "NVIDIA H100 80GB HBM3"
_CUSTOM_CALL = re.compile(r"custom_call\s*@([\w$.\-]+)|call_target_name\s*=\s*\"([^\"]+)\"")


def cuda_target():
    """A context in which `.lower(lowering_platforms=("cuda",))` can lower Triton kernels here."""
    device_cls = getattr(jax.sharding, "AbstractDevice", None)
    if device_cls is None:
        return contextlib.nullcontext()
    device = device_cls(device_kind=TARGET_GPU, num_cores=132, platform="gpu")
    try:
        mesh = jax.sharding.AbstractMesh((1,), ("x",), abstract_device=device)
    except TypeError:   # an AbstractMesh without abstract devices: this JAX needs none
        return contextlib.nullcontext()
    return jax.sharding.use_abstract_mesh(mesh)


def custom_call_targets(text: str) -> list[str]:
    return [a or b for a, b in _CUSTOM_CALL.findall(text)]


def triton_calls(text: str) -> int:
    """How many custom calls in a lowered module's text run a Triton kernel."""
    return sum("triton" in t.lower() for t in custom_call_targets(text))


def lower_for_cuda(fn, *specs):
    """`jax.jit(fn)` traced on `specs` and lowered for CUDA; returns the module text."""
    with cuda_target():
        return jax.jit(fn).trace(*specs).lower(lowering_platforms=("cuda",)).as_text()
