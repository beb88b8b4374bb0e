"""Train one stage: `python -m train.main --config sft4.py [--preset tiny|nano|full] [--set a.b=v ...]`.

`--config` takes a path or a bare name resolved in `configs/` (the file defines
`get_config(preset: str) -> TrainConfig`). Every override is applied and the whole config is
validated before anything is compiled; errors name the field.

Exit codes: 0 done (or stopped by a signal, checkpoint saved); 2 a config error, another trainer
holding run.out_dir, no checkpoint that restores, or a failed write (disk full, read-only,
permission: the path and errno); 3 a non-finite loss or gradient norm (run.on_nonfinite="stop",
naming the step). Each is one line on stderr, "config error: ..." or "error: ...".
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib.util
import json
import sys
from pathlib import Path

from funasr_jax import configtools
from funasr_jax.configtools import ConfigError
from funasr_jax.data.config import DataError
from funasr_jax.data.manifest import ManifestError
from funasr_jax.host_memory import tune_host_allocator
from funasr_jax.io.names import CheckpointError
from train.checkpointing import CheckpointWriteError
from train.distributed import initialize_distributed
from train.loop import NonFiniteError, train
from train.run_lock import RunLockedError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def resolve_config_path(name: str) -> Path:
    p = Path(name)
    if p.exists():
        return p
    for cand in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.py"):
        if cand.exists():
            return cand
    known = sorted(q.name for q in CONFIG_DIR.glob("*.py") if q.name not in ("__init__.py", "base.py"))
    raise ConfigError(f"--config {name!r}: no such file here or in {CONFIG_DIR} (known: {', '.join(known)})")


def load_config(name: str, preset: str = "tiny", overrides=()):
    """Config file + preset + `a.b=v` overrides -> validated TrainConfig."""
    path = resolve_config_path(name)
    spec = importlib.util.spec_from_file_location(f"_funasr_cfg_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, "get_config"):
        raise ConfigError(f"{path}: defines no get_config(preset)")
    return apply_overrides(mod.get_config(preset), overrides)


def apply_overrides(cfg, overrides=()):
    """`cfg` with each `a.b=value` string of `overrides` applied in order, validated."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected a.b=value")
        key, value = item.split("=", 1)
        cfg = configtools.override(cfg, key.strip(), value.strip())
    if overrides:  # recorded: run.init_from applies or refuses a model field asked for, never drops it
        cfg = dataclasses.replace(cfg, overrides=cfg.overrides + tuple(overrides))
    return cfg.validate()


def with_model_overrides(cfg, *, dtype: str | None = None, remat: str | None = None):
    """`cfg` with the model's compute dtype and/or remat policy replaced (CLI flags of the
    bench and the planner), validated."""
    model = cfg.model
    if dtype:
        model = model.replace(dtype=dtype)
    if remat:
        model = model.replace(remat=remat)
    return dataclasses.replace(cfg, model=model.validate())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.main", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="configs/<name>.py or a path")
    p.add_argument("--preset", default="tiny", choices=["tiny", "nano", "full"])
    p.add_argument("--set", action="append", default=[], metavar="A.B=V", help="override a config field")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = p.parse_args(argv)
    tune_host_allocator()  # freed step buffers go back to the system (funasr_jax.host_memory)
    try:
        cfg = load_config(args.config, args.preset, args.set)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(configtools.to_dict(cfg), indent=2, ensure_ascii=False))
        return 0
    initialize_distributed()  # no-op for one process; SLURM / Kubernetes / JAX_COORDINATOR_ADDRESS
    try:
        summary = train(cfg)
    except ConfigError as e:  # found once files are read (a tokenizer that does not fit the model, ...)
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (DataError, ManifestError) as e:  # nothing to learn from: empty manifests, unreadable audio, ...
        print(f"data error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except (RunLockedError, CheckpointError, CheckpointWriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except OSError as e:  # a write in out_dir failed: disk full, read-only, permission
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


def os_error_line(e: OSError) -> str:
    """'<path>: <reason> (errno ENOSPC)' for an OSError."""
    name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
    where = e.filename if e.filename is not None else "out_dir"
    other = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
    return f"{where}{other}: {e.strerror or e} (errno {name})"


if __name__ == "__main__":
    sys.exit(main())
