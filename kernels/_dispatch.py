"""Implementation dispatch shared by the kernel entry points (attention, CTC).

A `Dispatcher` holds one op's implementation names and preference tables and picks the
implementation for a call: candidates are tried in order, a candidate the op's `check` rejects
(`KernelUnsupportedError`) is skipped with its reason, and each distinct fallback is warned about
once. `compile_probe` turns "build a tiny fwd+bwd for this signature" into a cached
"does it compile here?" check (used on GPU, where a Triton/cuDNN lowering can fail).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence

import jax

from kernels._common import KernelUnsupportedError, device_kind

Implementation = str | Sequence[str] | None   # a name, names tried in order, or None (preference)


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
        """The first candidate that is known and passes `check(name)` (which raises
        `KernelUnsupportedError(reason)` to refuse; the reason is used verbatim). If an earlier
        candidate was refused, or none is usable (-> `fallback`), warns once per distinct message
        "<op>: using '<name>' (<reasons>)". `stacklevel` as for `warnings.warn` in the caller."""
        reasons = []
        for name in self.candidates(implementation):
            if name not in self.names:
                reasons.append(self.unknown(name) if self.unknown else
                               f"{name!r} is not a {self.op} implementation ({sorted(self.names)})")
                continue
            try:
                if check is not None:
                    check(name)
            except KernelUnsupportedError as e:
                reasons.append(str(e))
                continue
            if reasons:
                self.warn_once(f"{self.op}: using {name!r} ({'; '.join(reasons)})", stacklevel + 1)
            return name
        self.warn_once(f"{self.op}: using {self.fallback!r} ({'; '.join(reasons)})", stacklevel + 1)
        return self.fallback

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
