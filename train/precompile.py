"""Ahead-of-time compilation of the train step: one executable per planned batch shape.

A batch's shapes are a function of its bucket (`funasr_jax.data.planning`: T, L, Lc fixed per
bucket), so before step 1 the loop lowers and compiles the accumulating step for every bucket's
micro-batches [k, B, ...] (`precompile`, one progress line per bucket) and then calls only those
executables (`CompiledSteps`): a batch of any other shape raises `UnplannedShapeError` instead of
compiling mid-run. `jax.jit(...).lower(...).compile()` goes through the persistent compilation
cache (`train.distributed.enable_compilation_cache`), so a rerun with the same shapes reads its
executables back. `train.bench` times its step's compile with the same `aot_compile`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.data.planning import BucketShape
from funasr_jax.host_memory import release_free_memory
from funasr_jax.models.batch import Batch


class UnplannedShapeError(RuntimeError):
    """A batch arrived whose shapes no precompiled step has (a planning bug, never recompiled)."""


def aot_compile(jitted, *abstract_args) -> tuple[Any, float]:
    """(`jitted` lowered for `abstract_args` (arrays or ShapeDtypeStructs) and compiled, seconds).

    The compiler's freed memory (gigabytes at nano on the CPU backend) goes back to the system
    after each compile (`funasr_jax.host_memory.release_free_memory`)."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*abstract_args).compile()
    seconds = time.perf_counter() - t0
    release_free_memory()
    return compiled, seconds


def stacked_abstract(template: Batch, micro_batches: int, rows: int) -> Batch:
    """ShapeDtypeStructs of `micro_batches` stacked global batches shaped like `template` (this
    process's rows, numpy): every on-device field [k, rows, ...] (rows = the global batch size)."""
    return template.on_device_fields().map(
        lambda v: jax.ShapeDtypeStruct((micro_batches, rows) + tuple(np.shape(v)[1:]), np.asarray(v).dtype))


def abstract_norm() -> dict:
    """ShapeDtypeStructs of a step's `norm` ({"tokens", "utts"} f32 scalars)."""
    return {k: jax.ShapeDtypeStruct((), jnp.float32) for k in ("tokens", "utts")}


def signature(batch: Batch) -> tuple:
    """((field, shape, dtype), ...) of a batch's set fields: what selects a compiled step."""
    return tuple((k, tuple(v.shape), str(v.dtype)) for k, v in batch.arrays().items())


@dataclass
class CompiledSteps:
    """The compiled steps of a run by batch signature; call like the step itself."""

    by_signature: dict = field(default_factory=dict)
    per_bucket: list = field(default_factory=list)  # one record per compiled bucket

    def __call__(self, state, micro: Batch, norm):
        fn = self.by_signature.get(signature(micro))
        if fn is None:
            planned = "; ".join(f"bucket {r['bucket']}: feats {r['feats']}, L {r['tokens']}, Lc {r['ctc_tokens']}"
                                for r in self.per_bucket)
            raise UnplannedShapeError(f"a batch of shapes {signature(micro)} matches no precompiled step "
                                      f"(planned: {planned}); the data plan and the compiled steps disagree")
        return fn(state, micro, norm)

    def summary(self) -> dict:
        """{"count", "seconds", "per_bucket"}: what summary.json records under "compile"."""
        return {"count": len(self.per_bucket), "seconds": round(sum(r["seconds"] for r in self.per_bucket), 3),
                "per_bucket": list(self.per_bucket)}


def precompile(step: Callable, abstract_state, templates: Sequence[tuple[BucketShape, Batch]], *,
               micro_batches: int, rows: int, log: Callable[[str], None] | None = None) -> CompiledSteps:
    """Compile `step(state, micro [k, B, ...], norm)` (a jax.jit with explicit shardings) for
    every bucket's template batch, before training starts.

    abstract_state: ShapeDtypeStructs carrying the state's shardings (`sharded.restore_target`);
    templates: [(BucketShape, padding-only Batch)] from the data pipeline; rows: global batch size.
    """
    log = log if log is not None else (lambda s: print(s, file=sys.stderr, flush=True))
    out = CompiledSteps()
    for i, (shape, template) in enumerate(templates):
        batch = stacked_abstract(template, micro_batches, rows)
        compiled, seconds = aot_compile(step, abstract_state, batch, abstract_norm())
        out.by_signature[signature(batch)] = compiled
        feats = list(batch.feats.shape)
        out.per_bucket.append({"bucket": shape.bucket, "feats": feats, "tokens": shape.tokens,
                               "ctc_tokens": shape.ctc_tokens, "seconds": round(seconds, 3)})
        log(f"compile {i + 1}/{len(templates)}: bucket {shape.bucket} feats {feats} L {shape.tokens} "
            f"Lc {shape.ctc_tokens}: {seconds:.1f} s")
    return out
