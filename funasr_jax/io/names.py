"""The naming contract between our Flax parameter trees and PyTorch state dicts.

Flax modules are named after the PyTorch submodules, so a parameter path maps to a state-dict
key by joining with "." and renaming the leaf (README, "Design notes"):

| Flax leaf              | PyTorch leaf | layout rule                                              |
|------------------------|--------------|----------------------------------------------------------|
| `kernel` (2-D)         | `weight`     | transpose: Linear [out, in] <-> Dense [in, out]          |
| `kernel` (3-D)         | `weight`     | Conv1d [out, in/groups, K] <-> Flax Conv [K, in/groups, out] |
| `scale`                | `weight`     | LayerNorm / RMSNorm gain, same layout                    |
| `embedding`            | `weight`     | Embedding [V, D], same layout                            |
| `bias`                 | `bias`       | same layout                                              |

`params_from_state_dict` checks every tensor against a template tree (shapes from
`jax.eval_shape`) and raises `CheckpointMismatchError` that lists every missing, unexpected and
mis-shaped tensor by name.

Layers stacked at rest (`model.scan_layers`: `<stack>/stacked/...` leaves [L, ...],
`funasr_jax.models.stack`) are this module's boundary: `state_dict_from_params` unstacks them
into PyTorch's `<stack>.{i}.*` names, `params_from_state_dict` reads per-layer tensors and stacks
them as the template is laid out. Both are bit-exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from funasr_jax.models.stack import to_layout, unstack_layers
from sharding.paths import flatten, unflatten  # noqa: F401 (re-exported: checkpoint code flattens trees)

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete or not one of ours; names the path."""


class CheckpointMismatchError(ValueError):
    """A state dict does not match the model: lists every offending tensor."""

    def __init__(self, missing=(), unexpected=(), misshaped=(), source: str = "checkpoint"):
        self.missing, self.unexpected, self.misshaped = list(missing), list(unexpected), list(misshaped)
        lines = [f"{source} does not match the model:"]
        if self.missing:
            lines.append(f"  missing tensors ({len(self.missing)}): " + ", ".join(self.missing[:40])
                         + (" ..." if len(self.missing) > 40 else ""))
        if self.unexpected:
            lines.append(f"  unexpected tensors ({len(self.unexpected)}): " + ", ".join(self.unexpected[:40])
                         + (" ..." if len(self.unexpected) > 40 else ""))
        for key, got, want in self.misshaped:
            lines.append(f"  mis-shaped tensor {key}: checkpoint has {tuple(got)}, model expects {tuple(want)}")
        super().__init__("\n".join(lines))


def torch_key(path: tuple[str, ...]) -> str:
    """Flax path -> PyTorch state-dict key (`('llm','model','norm','scale')` -> `llm.model.norm.weight`)."""
    leaf = path[-1]
    if leaf not in _LEAF_TO_TORCH:
        raise ValueError(f"no PyTorch name for parameter leaf {'/'.join(path)!r}")
    return ".".join(path[:-1] + (_LEAF_TO_TORCH[leaf],))


def to_torch_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    if path[-1] == "kernel":
        if value.ndim == 2:
            return np.ascontiguousarray(value.T)
        if value.ndim == 3:
            return np.ascontiguousarray(value.transpose(2, 1, 0))
    return value


def from_torch_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    # Both layout changes are involutions.
    return to_torch_layout(path, value)


def torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    if path[-1] == "kernel" and len(shape) in (2, 3):
        return tuple(reversed(shape)) if len(shape) == 2 else (shape[2], shape[1], shape[0])
    return tuple(shape)


def state_dict_from_params(params: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """Flax params (nested dict, optionally under 'params') -> flat PyTorch-layout numpy dict."""
    if set(params) == {"params"}:
        params = params["params"]
    out = {}
    for path, v in flatten(unstack_layers(params)).items():
        out[prefix + torch_key(path)] = to_torch_layout(path, np.asarray(v))
    return out


def params_from_state_dict(
    state_dict: Mapping[str, Any],
    template: Mapping,
    *,
    prefix: str = "",
    ignore: Iterable[str] = (),
    allow_missing: Iterable[str] = (),
    source: str = "checkpoint",
) -> tuple[dict, list[str]]:
    """PyTorch-layout flat dict -> Flax params shaped like `template`.

    state_dict: {key: array-like}; keys not starting with `prefix` are ignored.
    template: nested dict of arrays or ShapeDtypeStructs (e.g. from `jax.eval_shape`), per-layer or
      stacked; the result has the template's layout (tensors are named and checked per layer).
    ignore: key prefixes (after `prefix`) that may be present and are dropped (e.g. a tied lm_head).
    allow_missing: key prefixes whose absence is accepted; those params are left out of the result
      and their keys returned as the second value so the caller can fill them (e.g. random init).
    Returns (params, missing_allowed_keys). Values come back as numpy arrays in the template's
    dtype. Raises CheckpointMismatchError naming every missing, unexpected or mis-shaped tensor.
    """
    if set(template) == {"params"}:
        template = template["params"]
    layout, template = template, unstack_layers(template)
    ignore, allow_missing = tuple(ignore), tuple(allow_missing)
    wanted = {torch_key(p): p for p in flatten(template)}
    flat_t = flatten(template)
    have = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    missing, misshaped, allowed_missing = [], [], []
    out = {}
    for key, path in wanted.items():
        if key not in have:
            if key.startswith(allow_missing) and allow_missing:
                allowed_missing.append(prefix + key)
            else:
                missing.append(prefix + key)
            continue
        value = to_numpy(have[key])
        want_shape = torch_shape(path, tuple(flat_t[path].shape))
        if tuple(value.shape) != want_shape:
            misshaped.append((prefix + key, value.shape, want_shape))
            continue
        out[path] = from_torch_layout(path, value).astype(np.dtype(flat_t[path].dtype))
    unexpected = [prefix + k for k in have if k not in wanted and not (ignore and k.startswith(ignore))]
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(missing, unexpected, misshaped, source=source)
    return to_layout(unflatten(out), layout), allowed_missing


def to_numpy(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    try:  # torch tensors, including bf16 (numpy has no bf16: go through float32)
        import torch

        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:
                value = value.float()
            return value.numpy()
    except ImportError:
        pass
    return np.asarray(value)
