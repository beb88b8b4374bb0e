"""Multi-host start-up: `jax.distributed.initialize` from SLURM / Kubernetes env or flags, and
the persistent compilation cache.

Call both once at the very start of a process, before anything touches a device::

    from train.distributed import initialize_distributed, enable_compilation_cache
    info = initialize_distributed()                 # no-op for one process
    enable_compilation_cache(cfg.mesh.compilation_cache)

Where the cluster is read from, first match wins:
  1. explicit arguments / a dict or object with coordinator_address, num_processes, process_id
     (and optionally local_device_ids);
  2. JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID (Kubernetes JobSet, any
     launcher that sets them; the port defaults to 1234);
  3. SLURM (SLURM_JOB_ID with SLURM_NTASKS > 1): jax's own cluster detection
     (`jax.distributed.initialize()` with no arguments reads SLURM_* itself);
  4. nothing: a single process, no initialisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import jax

NO_CACHE_ENV = "FUNASR_JAX_NO_COMPILE_CACHE"


class DistributedConfigError(ValueError):
    """The multi-host settings are incomplete or inconsistent (names the variable)."""


@dataclass(frozen=True)
class DistributedInfo:
    source: str  # "single" | "args" | "env" | "slurm"
    process_id: int
    num_processes: int
    coordinator_address: str | None


def _get(obj, name):
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def cluster_settings(cfg=None, env=None) -> dict | None:
    """Settings `initialize_distributed` would use, or None for a single process.

    Returns {"source", "coordinator_address", "num_processes", "process_id", "local_device_ids"}
    ("slurm" leaves the first four to jax's auto-detection).
    """
    env = os.environ if env is None else env
    addr, n, pid = (_get(cfg, k) for k in ("coordinator_address", "num_processes", "process_id"))
    local = _get(cfg, "local_device_ids")
    if addr is not None or n is not None or pid is not None:
        if addr is None or n is None or pid is None:
            raise DistributedConfigError(
                "initialize_distributed: coordinator_address, num_processes and process_id must be given together "
                f"(got {addr!r}, {n!r}, {pid!r})")
        if int(n) <= 1:
            return None
        return {"source": "args", "coordinator_address": str(addr), "num_processes": int(n),
                "process_id": int(pid), "local_device_ids": local}
    if env.get("JAX_COORDINATOR_ADDRESS"):
        try:
            n = int(env["JAX_NUM_PROCESSES"])
            pid = int(env["JAX_PROCESS_ID"])
        except KeyError as e:
            raise DistributedConfigError(f"JAX_COORDINATOR_ADDRESS is set but {e.args[0]} is not") from None
        except ValueError:
            raise DistributedConfigError("JAX_NUM_PROCESSES / JAX_PROCESS_ID must be integers") from None
        if not 0 <= pid < n:
            raise DistributedConfigError(f"JAX_PROCESS_ID {pid} is outside [0, JAX_NUM_PROCESSES={n})")
        if n <= 1:
            return None
        addr = env["JAX_COORDINATOR_ADDRESS"]
        if ":" not in addr:
            addr += ":1234"
        return {"source": "env", "coordinator_address": addr, "num_processes": n, "process_id": pid,
                "local_device_ids": local}
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1:
        return {"source": "slurm", "coordinator_address": None, "num_processes": int(env.get("SLURM_NTASKS", 0)),
                "process_id": int(env.get("SLURM_PROCID", 0)), "local_device_ids": local}
    return None


def initialize_distributed(cfg=None, *, env=None) -> DistributedInfo:
    """Start JAX's multi-controller runtime when the environment says there are > 1 processes.

    cfg: None, a dict, or an object with coordinator_address / num_processes / process_id
    (/ local_device_ids). Safe to call twice (the second call does nothing).
    """
    s = cluster_settings(cfg, env)
    if s is None:
        return DistributedInfo("single", 0, 1, None)
    if _already_initialized():
        return DistributedInfo(s["source"], jax.process_index(), jax.process_count(), s["coordinator_address"])
    if s["source"] == "slurm":
        jax.distributed.initialize(local_device_ids=s["local_device_ids"])
    else:
        jax.distributed.initialize(coordinator_address=s["coordinator_address"], num_processes=s["num_processes"],
                                   process_id=s["process_id"], local_device_ids=s["local_device_ids"])
    return DistributedInfo(s["source"], jax.process_index(), jax.process_count(), s["coordinator_address"])


def _already_initialized() -> bool:
    return bool(jax.distributed.is_initialized())


def enable_compilation_cache(path: str | None = "~/.cache/funasr_jax/xla", *, min_compile_secs: float = 1.0,
                             env=None) -> str | None:
    """Turn on JAX's persistent compilation cache in `path` (created if missing).

    Off when `path` is empty/None or env FUNASR_JAX_NO_COMPILE_CACHE=1. Returns the directory
    used or None. Compiles faster than `min_compile_secs` are not cached.
    """
    env = os.environ if env is None else env
    if not path or env.get(NO_CACHE_ENV, "") not in ("", "0"):
        return None
    d = Path(path).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(d))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(d)
