"""Implementation dispatch shared by the kernel entry points (attention, CTC).

A `Dispatcher` holds one op's implementation names and preference tables and picks the
implementation for a call:
- an implementation asked for BY NAME either serves the call or raises `KernelUnsupportedError`
  naming why — it never silently becomes another one;
- `implementation=None` (the backend's preference) or a tuple of names tries the candidates in
  order; a candidate the op's `check` refuses (`KernelUnsupportedError`) is skipped with its
  reason, and each distinct fallback is warned about once.

Two cached accelerator checks back `check` (`accelerator_checks()` says when they run: on GPU and
TPU, or everywhere with FUNASR_JAX_KERNEL_PROBES=1):
- `compile_probe`: "does the tiling this call will use lower and compile here?" (a Triton or
  cuDNN lowering can fail) -> refusal, so `None` falls back;
- `numerics_probe`: "does the compiled kernel, at that tiling, agree with `xla` on a small
  input?" -> `KernelNumericsError` when not. Asked for by name, that error is raised; chosen
  automatically (None / a tuple), the candidate is passed over with one warning naming the
  difference (e.g. "max error 0.41 x max|xla| > 0.03"), like any other refusal.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence

import jax
import numpy as np

from kernels._common import KernelNumericsError, KernelUnsupportedError, device_kind

PROBE_ENV = "FUNASR_JAX_KERNEL_PROBES"   # "1": run the accelerator checks on CPU too (tests)

Implementation = str | Sequence[str] | None   # a name, names tried in order, or None (preference)

_RECORD: contextvars.ContextVar = contextvars.ContextVar("funasr_jax_kernel_record", default=None)


@contextlib.contextmanager
def record_selections(into: dict[str, list[str]]):
    """Within this block every `Dispatcher.select` appends the implementation it chose to
    `into[op]` (once per distinct name, in order of first use) — what a trainer reports as the
    implementation each op actually ran."""
    token = _RECORD.set(into)
    try:
        yield into
    finally:
        _RECORD.reset(token)


def _note(op: str, name: str) -> str:
    into = _RECORD.get()
    if into is not None and name not in into.setdefault(op, []):
        into[op].append(name)
    return name


@dataclasses.dataclass(frozen=True, eq=False)
class Dispatcher:
    """Picks one of `names` per call.

    op: the prefix of the warnings ("attention", "ctc_loss").
    names: the known implementation names (a dict of name -> fn works: only `in` is used).
    backend_preference: backend -> names tried when `implementation=None`.
    gpu_preference: on "gpu", [(device-kind substring, names)], first match wins (else
      `backend_preference["gpu"]`).
    fallback: used, with a warning, when no candidate is usable (it is not checked).
    unknown: name -> the reason given for a name not in `names`.
    The tables are held by reference: editing the caller's dict/list changes the preference.
    """

    op: str
    names: Collection[str]
    backend_preference: Mapping[str, tuple[str, ...]]
    gpu_preference: Sequence[tuple[str, tuple[str, ...]]] | None = None
    fallback: str = "xla"
    unknown: Callable[[str], str] | None = None
    warned: set[str] = dataclasses.field(default_factory=set)   # messages already warned

    def preference(self, backend: str | None = None, kind: str | None = None) -> tuple[str, ...]:
        """Names tried in order for `implementation=None` on `backend` (default: JAX's) and, on
        GPU, device `kind` (default: the first device's)."""
        backend = backend or jax.default_backend()
        if backend == "gpu" and self.gpu_preference:
            kind = device_kind() if kind is None else kind
            for sub, order in self.gpu_preference:
                if sub in kind:
                    return order
        return self.backend_preference.get(backend, (self.fallback,))

    def candidates(self, implementation: Implementation) -> tuple[str, ...]:
        """A name -> just that one; None -> `preference()`; a sequence -> in its order."""
        if isinstance(implementation, str):
            return (implementation,)
        if implementation is None:
            return self.preference()
        return tuple(implementation)

    def select(self, implementation: Implementation, check: Callable[[str], None] | None = None,
               *, stacklevel: int = 2) -> str:
        """The implementation for this call.

        A name (str): that implementation if it is known and `check(name)` passes, else
        `KernelUnsupportedError("<op>: <name> was requested but cannot serve this call: <why>")`;
        a `KernelNumericsError` from `check` propagates unchanged (wrong numbers are never served
        when asked for by name).
        None / a sequence: the first candidate that is known and passes `check(name)` (which
        raises `KernelUnsupportedError(reason)` or `KernelNumericsError(difference)` to refuse;
        the message is used verbatim). If an earlier candidate was refused, or none is usable
        (-> `fallback`), warns once per distinct message "<op>: using '<name>' (<reasons>)".
        `stacklevel` as for `warnings.warn` in the caller. Other exceptions from `check` (bad
        input) propagate.
        """
        if isinstance(implementation, str):
            reason = self._refusal(implementation, check, explicit=True)
            if reason is not None:
                raise KernelUnsupportedError(
                    f"{self.op}: {implementation!r} was requested but cannot serve this call: {reason}")
            return _note(self.op, implementation)
        reasons = []
        for name in self.candidates(implementation):
            reason = self._refusal(name, check, explicit=False)
            if reason is not None:
                reasons.append(reason)
                continue
            if reasons:
                self.warn_once(f"{self.op}: using {name!r} ({'; '.join(reasons)})", stacklevel + 1)
            return _note(self.op, name)
        self.warn_once(f"{self.op}: using {self.fallback!r} ({'; '.join(reasons)})", stacklevel + 1)
        return _note(self.op, self.fallback)

    def _refusal(self, name: str, check, *, explicit: bool) -> str | None:
        """Why `name` cannot serve the call (None: it can). A numerics disagreement is a refusal
        only for an automatic choice (`explicit=False`); asked for by name it is raised."""
        if name not in self.names:
            return (self.unknown(name) if self.unknown else
                    f"{name!r} is not a {self.op} implementation ({sorted(self.names)})")
        try:
            if check is not None:
                check(name)
        except KernelUnsupportedError as e:
            return str(e)
        except KernelNumericsError as e:
            if explicit:
                raise
            return str(e)
        return None

    def warn_once(self, msg: str, stacklevel: int = 2) -> None:
        """`warnings.warn(msg)` the first time this dispatcher sees `msg`; `stacklevel` counts
        from the caller of `warn_once`."""
        if msg not in self.warned:
            self.warned.add(msg)
            warnings.warn(msg, stacklevel=stacklevel + 1)


def error_line(e: BaseException) -> str:
    """'TypeName: first line of the message'."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def compile_probe(build: Callable[..., tuple[Callable, Sequence[jax.ShapeDtypeStruct]]]):
    """Decorator: `build(*key) -> (fn, arg_specs)` becomes an lru-cached `probe(*key) -> None`
    if `jax.jit(fn)` lowers and compiles on `arg_specs` (ShapeDtypeStructs) here, else the error
    as "TypeName: first line". `key` must be hashable (names, dtypes, ints, bools)."""

    @functools.cache
    @functools.wraps(build)
    def probe(*key) -> str | None:
        fn, specs = build(*key)
        try:
            jax.jit(fn).lower(*specs).compile()
            return None
        except Exception as e:  # noqa: BLE001 - any compile failure means "not usable here"
            return error_line(e)

    return probe


def require_compiled(name: str, err: str | None) -> None:
    """Raise `KernelUnsupportedError("<name> failed to compile here (<err>)")` when a probe failed."""
    if err:
        raise KernelUnsupportedError(f"{name} failed to compile here ({err})")


def accelerator_checks() -> bool:
    """Whether the compile and numerics probes run: on GPU/TPU, or when FUNASR_JAX_KERNEL_PROBES=1
    (so CPU tests exercise them on interpreted kernels)."""
    return jax.default_backend() in ("gpu", "tpu") or os.environ.get(PROBE_ENV, "") == "1"


def numerics_probe(build: Callable[..., tuple[Callable, Callable, Sequence, Callable]]):
    """Decorator: `build(*key) -> (fn, reference_fn, args, compare)` becomes an lru-cached
    `probe(*key) -> None | str`: both functions are jitted and RUN on the concrete `args`
    (numpy arrays) — also when called while another function is being traced, since a compiled
    executable is called directly — and `compare(outputs, reference_outputs)` returns None or
    a message saying what differs. A function that fails to run returns its error line."""

    @functools.cache
    @functools.wraps(build)
    def probe(*key) -> str | None:
        fn, ref_fn, args, compare = build(*key)
        specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]
        # Lowered from abstract specs and the executables called directly: this works while an
        # outer function is being traced (no tracer reaches these calls).
        try:
            got = jax.jit(fn).lower(*specs).compile()(*args)
        except Exception as e:  # noqa: BLE001 - reported, then raised by require_accurate
            return f"it failed to run ({error_line(e)})"
        want = jax.jit(ref_fn).lower(*specs).compile()(*args)
        return compare(got, want)

    return probe


def require_accurate(name: str, err: str | None, what: str) -> None:
    """Raise `KernelNumericsError("<name> disagrees with 'xla' on <what>: <err>")` when a numerics
    probe failed. `Dispatcher.select` raises it for a name asked for explicitly and turns it into
    one warning plus the next candidate for an automatic choice (a kernel that compiles but
    computes wrong numbers is a bug to report; an automatic choice must not sink the run)."""
    if err:
        raise KernelNumericsError(f"{name} disagrees with 'xla' on {what}: {err}")


def max_rel_error(got, want) -> float:
    """max |got - want| / max(max |want|, 1e-6) over a pytree of arrays (in f32)."""
    worst = 0.0
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        g = np.asarray(g, np.float32)
        w = np.asarray(w, np.float32)
        if g.shape != w.shape:
            return float("inf")
        scale = max(float(np.abs(w).max()) if w.size else 0.0, 1e-6)
        err = float(np.abs(g - w).max()) / scale if w.size else 0.0
        worst = max(worst, err if np.isfinite(err) else float("inf"))
    return worst
