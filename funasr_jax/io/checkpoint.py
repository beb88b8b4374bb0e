"""Our on-disk model format (orbax) and loading from any source a user has.

A *model checkpoint* is a directory:
    funasr_jax.json   {"format": "funasr-jax", "version": 1, "model": <FunASRConfig dict>,
                       "tokenizer": <path or null>, "ctc_tokenizer": <path or null>,
                       "frontend": <FrontendConfig dict>, "prompt": {"first_pass": <bool>},
                       "decoding": {"ctc_weight": <float>}}
    params/           orbax StandardCheckpointer tree (f32 or bf16 leaves)
    digest.json       sha256 of every file under params/ (`funasr_jax.io.digest`), written after the save

Loading verifies the params against the digest next to them (`verify_params`): a file that is
missing, truncated or altered is refused by name (`DigestError`); params without a digest (older
checkpoints, other writers) load with one warning.

A *training run* directory holds `funasr_jax.json` too and `latest_params.json`, a pointer
{"params": <params directory relative to the run>, "step": n} that the trainer rewrites after each
save (`write_params_pointer`); `load_model` follows it, so this module knows nothing of the
trainer's own layout.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from funasr_jax import configtools
from funasr_jax.audio.frontend import FrontendConfig
from funasr_jax.io.digest import DIGEST_FILE, verify_digest, write_digest
from funasr_jax.io.funasr_torch import SIDECAR_FILE, load_funasr_dir, release_model
from funasr_jax.io.names import CheckpointError, CheckpointMismatchError, flatten, unflatten
from funasr_jax.models.config import FunASRConfig
from funasr_jax.models.funasr import abstract_params
from funasr_jax.models.stack import LayoutError, to_layout
from funasr_jax.text.tokenizer import QWEN3_TOKENIZER

META_FILE = "funasr_jax.json"
TRAIN_CONFIG_FILE = "train_config.json"  # in a run directory: the resolved TrainConfig (train.loop)
POINTER_FILE = "latest_params.json"  # in a run directory: {"params": <dir relative to the run>, "step": n}


@dataclass
class LoadedModel:
    cfg: FunASRConfig
    params: dict
    tokenizer_path: str | None = None
    ctc_tokenizer_path: str | None = None
    source: str = ""
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    first_pass_prompt: bool = False  # trained with the CTC hypothesis in the prompt
    ctc_weight: float = 0.0  # default joint CTC/LLM decoding weight


def write_meta(path, cfg: FunASRConfig, tokenizer_path=None, ctc_tokenizer_path=None,
               frontend: FrontendConfig | None = None, extra=None, first_pass_prompt: bool = False,
               ctc_weight: float = 0.0):
    """Write `funasr_jax.json`; tokenizer and CMVN files are copied into the checkpoint so the
    directory is self-contained (and later edits of the originals cannot change the model).
    first_pass_prompt: the model expects the CTC hypothesis in its prompt (recorded as
    `"prompt": {"first_pass": true}`); ctc_weight: default joint CTC/LLM decoding weight
    (`"decoding": {"ctc_weight": w}`)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    frontend = frontend or FrontendConfig()
    cmvn = _bundle(frontend.cmvn_file, path)
    meta = {"format": "funasr-jax", "version": 1, "model": configtools.to_dict(cfg),
            "tokenizer": _bundle(tokenizer_path, path), "ctc_tokenizer": _bundle(ctc_tokenizer_path, path),
            "frontend": configtools.to_dict(dataclasses.replace(frontend, cmvn_file=cmvn)),
            "prompt": {"first_pass": bool(first_pass_prompt)}, "decoding": {"ctc_weight": float(ctc_weight)}}
    meta.update(extra or {})
    (path / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False))


def _bundle(p, base: Path):
    """Copy a side file into `base` (if not already there); return its name relative to `base`.
    The bundled Qwen3 tokenizer's name (`QWEN3_TOKENIZER`) is kept as a name: it ships with the
    library, so the checkpoint needs no copy."""
    if p is None:
        return None
    if _builtin(p):
        return QWEN3_TOKENIZER
    src = Path(p).resolve()
    if not src.exists():
        raise CheckpointError(f"{src}: no such file (needed by the checkpoint in {base})")
    try:
        return str(src.relative_to(base.resolve()))
    except ValueError:
        dst = base / src.name
        if dst.resolve() != src:
            shutil.copyfile(src, dst)
        return src.name


def read_meta(path) -> dict:
    path = Path(path)
    f = path / META_FILE
    if not f.exists():
        raise CheckpointError(f"{path}: not a funasr-jax checkpoint (no {META_FILE})")
    try:
        meta = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f}: unreadable ({e})") from None
    if meta.get("format") != "funasr-jax":
        raise CheckpointError(f"{f}: unknown format {meta.get('format')!r}")
    return meta


def model_config_from_meta(meta: dict, path) -> FunASRConfig:
    try:
        return configtools.from_dict(FunASRConfig, meta["model"], "model")
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}/{META_FILE}: bad model config: {e}") from None


def save_params(path, params, cfg: FunASRConfig, tokenizer_path=None, ctc_tokenizer_path=None,
                frontend: FrontendConfig | None = None, first_pass_prompt: bool = False, ctc_weight: float = 0.0):
    """Write a model checkpoint directory (see module docstring). Overwrites `params/`."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    write_meta(path, cfg, tokenizer_path, ctc_tokenizer_path, frontend, first_pass_prompt=first_pass_prompt,
               ctc_weight=ctc_weight)
    (path / DIGEST_FILE).unlink(missing_ok=True)  # the old digest does not describe the new params
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path / "params", jax.tree_util.tree_map(np.asarray, params), force=True)
    ckptr.wait_until_finished()
    write_digest(path, under=("params",))


def verify_params(params_dir) -> bool | None:
    """Check `params_dir` against the digest of the directory holding it (`<dir>/digest.json`,
    its entries under `params/`). -> True (verified) or None (no digest: one warning).
    Raises DigestError (a CheckpointError) naming the first missing / truncated / altered file."""
    params_dir = Path(params_dir)
    ok = verify_digest(params_dir.parent, under=(params_dir.name,))
    if ok is None:
        warnings.warn(f"{params_dir}: no {DIGEST_FILE} next to it, loaded without verification "
                      "(a checkpoint written before digests, or by another tool)", stacklevel=3)
    return ok


def restore_params(params_dir, abstract=None, *, verify: bool = True):
    """Restore an orbax params tree, first checked against its digest (`verify_params`; verify=False
    skips that, for a caller that verified already); with `abstract` (ShapeDtypeStructs) every tensor's presence
    and shape is checked (orbax itself would silently return the stored shapes) and the result is
    cast to the abstract dtypes. Mismatches raise CheckpointError listing each tensor. The stored
    tree may be per-layer or stacked (`model.scan_layers`); it comes back in `abstract`'s layout
    (`funasr_jax.models.stack.to_layout`, bit-exact)."""
    import orbax.checkpoint as ocp

    params_dir = Path(params_dir).absolute()
    if not params_dir.exists():
        raise CheckpointError(f"{params_dir}: no such params directory")
    if verify:
        verify_params(params_dir)
    try:
        raw = ocp.StandardCheckpointer().restore(params_dir)
    except Exception as e:  # noqa: BLE001 - orbax raises many kinds on a damaged directory
        raise CheckpointError(f"{params_dir}: cannot restore ({type(e).__name__}: {e})") from None
    if abstract is None:
        return raw
    try:
        raw = to_layout(raw, abstract)
    except LayoutError as e:
        raise CheckpointError(f"{params_dir}: params do not match the model config: {e}") from None
    have, want = flatten(raw), flatten(abstract)
    missing = ["/".join(p) for p in want if p not in have]
    unexpected = ["/".join(p) for p in have if p not in want]
    misshaped = [("/".join(p), np.shape(have[p]), tuple(want[p].shape)) for p in want
                 if p in have and tuple(np.shape(have[p])) != tuple(want[p].shape)]
    if missing or unexpected or misshaped:
        err = CheckpointMismatchError(missing, unexpected, misshaped, source=str(params_dir))
        raise CheckpointError(f"params do not match the model config: {err}")
    return unflatten({p: np.asarray(have[p]).astype(want[p].dtype) for p in want})


def write_params_pointer(run_dir, params_dir, step: int | None = None) -> None:
    """Record in `run_dir` where its newest params are (`params_dir`, absolute or relative to
    `run_dir`), atomically; `load_model(run_dir)` follows it. A trainer calls this after each save."""
    run_dir = Path(run_dir)
    rel = Path(params_dir)
    if rel.is_absolute():
        try:
            rel = rel.relative_to(run_dir.absolute())
        except ValueError:
            pass
    tmp = run_dir / (POINTER_FILE + ".tmp")
    tmp.write_text(json.dumps({"params": str(rel), "step": step}))
    tmp.replace(run_dir / POINTER_FILE)


def params_dir_of(path) -> Path:
    """The params directory of a checkpoint (`params/`) or of a run (what its pointer names)."""
    path = Path(path)
    pointer = path / POINTER_FILE
    if not pointer.exists():
        if not (path / "params").exists() and (path / "checkpoints").is_dir():
            raise CheckpointError(
                f"{path}: a training run without {POINTER_FILE} (runs written before the pointer existed); "
                f"write one naming the params to load, e.g. "
                f"echo '{{\"params\": \"checkpoints/<step>/params\"}}' > {path / POINTER_FILE}")
        return path / "params"
    try:
        rel = json.loads(pointer.read_text())["params"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{pointer}: unreadable params pointer ({type(e).__name__}: {e})") from None
    return _resolve_path(rel, path)


def load_model(path, *, allow_missing_ctc: bool = True) -> LoadedModel:
    """Load from a funasr-jax checkpoint, a training run dir, or a FunASR Fun-ASR-Nano directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or model directory")
    if (path / META_FILE).exists():
        meta = read_meta(path)
        cfg = model_config_from_meta(meta, path)
        params_dir = params_dir_of(path)
        params = restore_params(params_dir, abstract_params(cfg))
        return LoadedModel(cfg, params, source=str(params_dir), **settings_from_meta(meta, path, path / META_FILE))
    if (path / "model.pt").exists() or (path / "config.yaml").exists():
        cfg, params, _ = load_funasr_dir(path, allow_missing=("ctc",) if allow_missing_ctc else ())
        cfg, params, meta = release_model(path, cfg, params)  # an export of ours keeps its settings
        return LoadedModel(cfg, params, source=str(path), **settings_from_meta(meta, path, path / SIDECAR_FILE))
    raise CheckpointError(f"{path}: neither a funasr-jax checkpoint ({META_FILE}) nor a FunASR model "
                          "directory (config.yaml + model.pt)")


def settings_from_meta(meta: dict, base: Path, where) -> dict:
    """Checkpoint meta (ours, or an export's sidecar) -> the LoadedModel fields besides config and
    params: tokenizer paths and CMVN resolved against `base`, frontend, first-pass prompt, CTC
    weight; a bad value raises CheckpointError naming `where`."""
    fe = dict(meta.get("frontend") or {})
    if fe.get("cmvn_file"):
        fe["cmvn_file"] = _resolve(fe["cmvn_file"], base)
    try:
        frontend = configtools.from_dict(FrontendConfig, fe, "frontend")
    except ValueError as e:
        raise CheckpointError(f"{where}: bad frontend config: {e}") from None
    first_pass = (meta.get("prompt") or {}).get("first_pass", False)
    if not isinstance(first_pass, bool):
        raise CheckpointError(f"{where}: prompt.first_pass must be true or false, got {first_pass!r}")
    weight = (meta.get("decoding") or {}).get("ctc_weight", 0.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight < 1.0:
        raise CheckpointError(f"{where}: decoding.ctc_weight must be a number in [0, 1), got {weight!r}")
    return {"tokenizer_path": _resolve(meta.get("tokenizer"), base),
            "ctc_tokenizer_path": _resolve(meta.get("ctc_tokenizer"), base),
            "frontend": frontend, "first_pass_prompt": first_pass, "ctc_weight": float(weight)}


def _resolve_path(p, base: Path) -> Path:
    q = Path(p)
    return q if q.is_absolute() else (base / q)


def _resolve(p, base: Path):
    if p is None or _builtin(p):
        return None if p is None else QWEN3_TOKENIZER
    return str(_resolve_path(p, base))


def _builtin(p) -> bool:
    """`p` names the tokenizer bundled with the library rather than a file."""
    return isinstance(p, str) and p.lower() == QWEN3_TOKENIZER
