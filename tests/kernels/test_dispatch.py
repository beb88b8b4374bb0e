"""The shared kernel dispatch helper (`kernels._dispatch`): preference tables, candidate
selection with fallback, warn-once, and the cached compile probe."""

from __future__ import annotations

import linecache
import warnings

import jax
import jax.numpy as jnp
import pytest

from kernels._common import KernelNumericsError, KernelUnsupportedError
from kernels._dispatch import Dispatcher, compile_probe, error_line, require_compiled


def _dispatcher(**kw):
    kw = {"op": "op", "names": {"fast": None, "ok": None, "xla": None},
          "backend_preference": {"cpu": ("xla",), "tpu": ("fast", "xla")},
          "gpu_preference": [("H100", ("fast", "ok", "xla")), ("", ("ok", "xla"))]} | kw
    return Dispatcher(**kw)


def _refuse(*bad):
    def check(name):
        if name in bad:
            raise KernelUnsupportedError(f"{name} cannot run here")
    return check


def _select(d, implementation, check=None):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        name = d.select(implementation, check)
    return name, [str(x.message) for x in w]


def test_preference_by_backend_and_kind():
    d = _dispatcher()
    assert d.preference("cpu") == ("xla",)
    assert d.preference("tpu") == ("fast", "xla")
    assert d.preference("gpu", "NVIDIA H100 80GB HBM3") == ("fast", "ok", "xla")
    assert d.preference("gpu", "NVIDIA A100") == ("ok", "xla")
    assert d.preference("rocm") == ("xla",)                          # unknown backend: the fallback
    assert d.preference() == d.preference(jax.default_backend())
    nogpu = _dispatcher(gpu_preference=None, backend_preference={"gpu": ("ok",)})
    assert nogpu.preference("gpu", "NVIDIA H100") == ("ok",)
    table = [("", ("ok",))]
    live = _dispatcher(gpu_preference=table)
    table.insert(0, ("H200", ("fast",)))                              # tables are held by reference
    assert live.preference("gpu", "NVIDIA H200") == ("fast",)


def test_candidates():
    d = _dispatcher()
    assert d.candidates("ok") == ("ok",)
    assert d.candidates(("ok", "fast")) == ("ok", "fast")
    assert d.candidates(["fast"]) == ("fast",)
    assert d.candidates(None) == d.preference()


def test_select_explicit_tuple_and_none():
    d = _dispatcher()
    assert _select(d, "fast") == ("fast", [])
    assert _select(d, ("ok", "fast")) == ("ok", [])
    assert _select(d, None) == (d.preference()[0], [])
    name, msgs = _select(d, ("fast", "ok"), _refuse("fast"))         # next candidate, not the fallback
    assert name == "ok" and msgs == ["op: using 'ok' (fast cannot run here)"]
    with pytest.raises(KernelUnsupportedError,                       # by name: an error, no fallback
                       match=r"^op: 'fast' was requested but cannot serve this call: fast cannot run here$"):
        _select(d, "fast", _refuse("fast"))
    name, msgs = _select(d, ("fast",), _refuse("fast"))              # a tuple: nothing usable -> fallback
    assert name == "xla" and msgs == ["op: using 'xla' (fast cannot run here)"]
    name, msgs = _select(d, (), None)
    assert name == "xla" and msgs == ["op: using 'xla' ()"]


def test_refused_candidate_warns_once():
    d = _dispatcher()
    check = _refuse("fast", "ok")
    first = _select(d, ("fast", "ok", "xla"), check)
    second = _select(d, ("fast", "ok", "xla"), check)
    assert first == ("xla", ["op: using 'xla' (fast cannot run here; ok cannot run here)"])
    assert second == ("xla", [])
    assert len(d.warned) == 1
    _, msgs = _select(d, ("ok", "xla"), check)                        # another message: warned too
    assert msgs == ["op: using 'xla' (ok cannot run here)"]
    d.warned.clear()
    assert _select(d, ("fast", "ok", "xla"), check)[1] == first[1]
    assert not _dispatcher().warned                                   # warned sets are per dispatcher


def test_numerics_disagreement_raises_by_name_falls_back_automatically():
    def check(name):
        if name == "fast":
            raise KernelNumericsError("fast disagrees with 'xla' on a probe: max error 0.4 x max|xla| > 0.03")
    d = _dispatcher(backend_preference={"cpu": ("fast", "ok", "xla")})
    with pytest.raises(KernelNumericsError, match=r"^fast disagrees with 'xla' on a probe: max error 0.4"):
        _select(d, "fast", check)                                     # by name: the error itself
    for implementation in (None, ("fast", "ok")):
        name, msgs = _select(d, implementation, check)
        assert name == "ok"
    assert msgs == [] and d.warned == {"op: using 'ok' (fast disagrees with 'xla' on a probe: max error 0.4 x "
                                       "max|xla| > 0.03)"}            # one warning for both calls


def test_other_exceptions_propagate():
    def check(name):
        raise ValueError("bad input")
    with pytest.raises(ValueError, match="bad input"):
        _dispatcher().select("fast", check)


def test_unknown_names_give_a_reason():
    d = _dispatcher()
    name, msgs = _select(d, ("nope", "ok"))
    assert name == "ok"
    assert msgs == ["op: using 'ok' ('nope' is not a op implementation (['fast', 'ok', 'xla']))"]
    custom = _dispatcher(unknown=lambda n: f"{n} is unheard of")
    assert _select(custom, ("nope",)) == ("xla", ["op: using 'xla' (nope is unheard of)"])
    with pytest.raises(KernelUnsupportedError, match="nope is unheard of"):
        custom.select("nope")


def test_warning_points_at_the_callers_caller():
    d = _dispatcher()

    def entry_point():
        return d.select(("nope",))

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        entry_point()
    assert w[0].filename == __file__
    assert linecache.getline(w[0].filename, w[0].lineno).strip() == "entry_point()"


def test_compile_probe_and_error_line():
    builds = []

    @compile_probe
    def probe(n: int, bad: bool):
        builds.append((n, bad))
        spec = jax.ShapeDtypeStruct((n, n + 1), jnp.float32)
        if bad:
            return (lambda x: x @ x), (spec,)                         # [n, n+1] @ [n, n+1]: shape error
        return jax.grad(lambda x: (x @ x.T).sum()), (spec,)

    assert probe(3, False) is None
    err = probe(3, True)
    assert isinstance(err, str) and err.startswith("TypeError: ") and "\n" not in err
    assert probe(3, False) is None and probe(3, True) == err
    assert builds == [(3, False), (3, True)]                         # cached per key
    assert error_line(ValueError("first\nsecond")) == "ValueError: first"
    assert error_line(RuntimeError()) == "RuntimeError: "


def test_require_compiled():
    require_compiled("k", None)
    with pytest.raises(KernelUnsupportedError, match=r"^k failed to compile here \(TypeError: x\)$"):
        require_compiled("k", "TypeError: x")
