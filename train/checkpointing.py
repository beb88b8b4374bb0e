"""Training checkpoints with orbax: params, optimizer state, step/RNG and the data-iterator state.

Layout (one `CheckpointManager` under `<out_dir>/checkpoints`):
    <step>/params       StandardSave  (`<out_dir>/latest_params.json` points `load_model` at the newest)
    <step>/opt_state    StandardSave  (trainable leaves only: frozen ones have no state)
    <step>/meta         JsonSave      {"step", "rng"}
    <step>/data         JsonSave      grain iterator state (exact data position)
    <step>/digest.json  sha256 of every file above (`funasr_jax.io.digest`), written once orbax has
                        finalized the step, before the pointer moves and before older steps are pruned

Saving is synchronous. A save that fails (disk full, read-only, permission) raises
`CheckpointWriteError` (an OSError: errno + path) after removing its own partial files; older
checkpoints and the pointer are untouched. What orbax / tensorstore print about the failed
parallel writes (fd 2 and the "absl" / "asyncio" loggers during the save; late callbacks and
unawaited coroutines afterwards) is dropped, so the failure is one line (`_HeldStderr`,
`_HeldLogs`, `_quiet_cut_short_writes`); after a successful save what was held is replayed. Keep-last (`keep`) is ours, not orbax's: only after
the new step's digest is written are steps older than the newest `keep` deleted.

`restore()` (no step) takes the newest checkpoint that verifies against its digest and restores;
each newer one that does not is named in a warning with the reason and moved to
`<out_dir>/checkpoints_rejected/<step>-<UTC time>` (kept for inspection; its step number is
free to be saved again). A checkpoint without a digest (written before digests) restores with
a warning.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from funasr_jax.io.checkpoint import write_params_pointer
from funasr_jax.io.digest import DIGEST_FILE, verify_digest, write_digest
from funasr_jax.io.names import CheckpointError

REJECTED_DIR = "checkpoints_rejected"

# errno names found in the text of errors that carry no errno (tensorstore's, through orbax)
_ERRNO_TEXT = [(re.compile(r"OS error (\d+)|\[Errno (\d+)\]|errno[ =](\d+)", re.I), None),
               (re.compile(r"No space left on device|RESOURCE_EXHAUSTED", re.I), errno.ENOSPC),
               (re.compile(r"Disk quota exceeded", re.I), errno.EDQUOT),
               (re.compile(r"Read-only file system", re.I), errno.EROFS),
               (re.compile(r"Permission denied|PERMISSION_DENIED", re.I), errno.EACCES)]


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (errno, strerror, the path); older checkpoints are untouched."""

    def __str__(self) -> str:
        name = errno.errorcode.get(self.errno, str(self.errno))
        return (f"cannot write checkpoint {self.filename}: {self.strerror} (errno {name}); "
                "the previous checkpoints are untouched")


def io_errno(exc: BaseException) -> int | None:
    """The errno behind a failed write: from an OSError in the exception's chain, else read from
    the messages (tensorstore reports "[OS error 28: No space left on device]" in a ValueError)."""
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno:
            return e.errno
        e = e.__cause__ or e.__context__
    e = exc
    seen.clear()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e)
        for pattern, code in _ERRNO_TEXT:
            m = pattern.search(text)
            if m:
                return code if code is not None else int(next(g for g in m.groups() if g))
        e = e.__cause__ or e.__context__
    return None


class _HeldLogs(logging.Filter):
    """Holds back the records orbax's writer threads (logger "absl") and asyncio's unretrieved
    task errors (logger "asyncio", logged whenever the failed write tasks are collected, often at
    exit) emit about one directory: a failed save is reported once, by `CheckpointWriteError`,
    not by hundreds of tracebacks of its parallel writes. Other records pass."""

    LOGGERS = ("absl", "asyncio")

    def __init__(self, needle: str):
        super().__init__()
        self.needle, self.held = needle, []

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += str(record.exc_info[1])
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is not ours to hold
            return True
        if self.needle in text:
            if self.held is not None:
                self.held.append(record)
            return False
        return True

    def drop_for_good(self) -> None:
        """Stay attached, dropping this directory's records from now on (they keep coming)."""
        self.held = None

    def attach(self) -> _HeldLogs:
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)
        return self

    def detach(self, replay: bool) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)
        if replay:
            for r in self.held or ():
                logging.getLogger(r.name).handle(r)
        self.held = []


class _HeldStderr:
    """File descriptor 2 sent to memory while a save runs (tensorstore's and asyncio's threads print
    tracebacks there directly, one per failed parallel write); `release(replay=True)` writes what
    was held to the real stderr, `release(replay=False)` drops it. A no-op without memfd_create."""

    def __init__(self):
        self.saved = self.mem = None
        if not hasattr(os, "memfd_create"):
            return
        try:
            sys.stderr.flush()
            self.mem = os.memfd_create("funasr-jax-save-stderr")
            self.saved = os.dup(2)
            os.dup2(self.mem, 2)
        except OSError:
            self._close()

    def release(self, replay: bool) -> None:
        if self.saved is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.saved, 2)
        if replay:
            os.lseek(self.mem, 0, os.SEEK_SET)
            while chunk := os.read(self.mem, 1 << 16):
                os.write(2, chunk)
        self._close()

    def _close(self) -> None:
        for fd in (self.saved, self.mem):
            if fd is not None:
                os.close(fd)
        self.saved = self.mem = None


def _loop_closed(exc) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _quiet_cut_short_writes() -> None:
    """After a save failed for lack of space / permission, orbax's parallel writes that were cut
    short still report, later and from other threads: tensorstore's completion callbacks find
    orbax's event loop closed ("Event loop is closed", through sys.excepthook or
    sys.unraisablehook) and their coroutines are collected never awaited (a RuntimeWarning at
    exit). Those (only those) are dropped from then on; the failure itself was reported once."""
    warnings.filterwarnings("ignore", message=r"coroutine '.*write_fragment' was never awaited",
                            category=RuntimeWarning)
    if getattr(sys.excepthook, "_funasr_quiet", False):
        return
    except_hook, unraisable_hook = sys.excepthook, sys.unraisablehook

    def excepthook(kind, value, tb):
        if not _loop_closed(value):
            except_hook(kind, value, tb)

    def unraisablehook(info):
        if not _loop_closed(info.exc_value):
            unraisable_hook(info)

    excepthook._funasr_quiet = unraisablehook._funasr_quiet = True
    sys.excepthook, sys.unraisablehook = excepthook, unraisablehook


class TrainCheckpointer:
    def __init__(self, out_dir, keep: int):
        self.dir = Path(out_dir).absolute() / "checkpoints"
        self.keep = keep
        self.restored_step: int | None = None
        self.rejected: dict[int, str] = {}  # step -> why it was not restored
        # keep-last is done here (`_prune`), after the new step's digest; saves are synchronous so
        # a failure surfaces in `save` (no writer thread left running at exit); tmp directories of
        # a crashed save are removed at start (this process holds the run's lock: no other writer)
        self.manager = ocp.CheckpointManager(
            self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                                           enable_async_checkpointing=False,
                                                           cleanup_tmp_directories=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def step_dir(self, step: int) -> Path:
        return self.dir / str(step)

    def save(self, state, data_state) -> int:
        step = int(state["step"])
        meta = {"step": step, "rng": np.asarray(jax.random.key_data(state["rng"])
                                                 if jnp.issubdtype(state["rng"].dtype, jax.dtypes.prng_key)
                                                 else state["rng"]).tolist()}
        target = self.step_dir(step)
        logs, err = _HeldLogs(str(target)).attach(), _HeldStderr()
        try:
            self.manager.save(step, args=ocp.args.Composite(
                params=ocp.args.StandardSave(state["params"]),
                opt_state=ocp.args.StandardSave(state["opt_state"]),
                meta=ocp.args.JsonSave(meta),
                data=ocp.args.JsonSave(data_state if data_state is not None else {}),
            ), force=True)
            self.manager.wait_until_finished()
        except BaseException as e:
            code = io_errno(e) if isinstance(e, Exception) else None
            if code is None:
                err.release(replay=True)
                self._abandon(step, finalized=False)
                logs.detach(replay=True)
                raise
            # an I/O failure is reported once, by the error below: what orbax's writes still in
            # flight print while they fail (and later, from other threads) is dropped
            logs.drop_for_good()
            _quiet_cut_short_writes()
            self._abandon(step, finalized=False, settle_s=10.0)
            err.release(replay=False)
            raise CheckpointWriteError(code, _strerror(code, e), str(target)) from None
        err.release(replay=True)
        logs.detach(replay=True)
        if jax.process_index() == 0:
            try:
                write_digest(target, extra={"step": step})
                write_params_pointer(self.dir.parent, target / "params", step)
            except OSError as e:
                self._abandon(step, finalized=True)
                raise CheckpointWriteError(e.errno or errno.EIO, e.strerror or str(e),
                                           e.filename or str(target)) from None
        self._prune(step)
        return step

    def _abandon(self, step: int, finalized: bool, settle_s: float = 0.0) -> None:
        """Remove what a failed save of `step` left (its tmp directory; the finalized step when its
        digest could not be written), so the newest step on disk is the last good one.
        settle_s: up to this many seconds, remove again while writes still in flight re-create it
        (it must stay gone for 0.5 s)."""
        if jax.process_index() != 0:
            return
        deadline, gone_since = time.monotonic() + settle_s, None
        while True:
            left = list(self.dir.glob(f"{step}.orbax-checkpoint-tmp*"))
            for tmp in left:
                shutil.rmtree(tmp, ignore_errors=True)
            now = time.monotonic()
            gone_since = (gone_since or now) if not left else None
            if now >= deadline or (gone_since is not None and now - gone_since >= 0.5):
                break
            time.sleep(0.1)
        if finalized:
            shutil.rmtree(self.step_dir(step), ignore_errors=True)
            self.manager.reload()

    def _prune(self, newest: int) -> None:
        """Delete all but the newest `keep` steps; `newest` (just saved, digest written) is never
        among them. Every process calls this (orbax's delete synchronises the processes)."""
        steps = sorted(s for s in self.manager.all_steps() if s <= newest)
        for s in steps[:-self.keep]:
            if s != newest:
                self.manager.delete(s)

    def restore(self, abstract_state, step: int | None = None, accept=None):
        """-> (state, data_state) of `step`, or by default of the newest checkpoint that verifies and
        restores (module docstring). accept(state, data_state): the caller's own check (e.g. setting
        the data iterator); an exception there rejects that checkpoint too. Raises CheckpointError
        (naming each checkpoint and why) when none does."""
        if step is not None:
            out = self._restore(step, abstract_state)
            if accept is not None:
                accept(*out)
            self.restored_step = step
            return out
        for s in sorted(self.manager.all_steps(), reverse=True):
            try:
                out = self._restore(s, abstract_state)
                if accept is not None:
                    accept(*out)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - a damaged checkpoint fails in orbax in many ways
                reason = str(e) if isinstance(e, CheckpointError) else f"{type(e).__name__}: {_first_line(e)}"
                self.rejected[s] = reason
                print(f"warning: checkpoint {self.step_dir(s)} not usable: {reason}; trying an older one",
                      file=sys.stderr)
                continue
            self.restored_step = s
            if self.rejected:
                self._set_aside(s)
            return out
        listing = "; ".join(f"{s}: {r}" for s, r in self.rejected.items()) or "none found"
        raise CheckpointError(f"{self.dir}: no checkpoint verifies and restores ({listing}); "
                              f"move the directory away to start afresh")

    def _restore(self, step: int, abstract_state):
        d = self.step_dir(step)
        if verify_digest(d) is None:
            print(f"warning: checkpoint {d} has no {DIGEST_FILE} (written before digests): restoring it unverified",
                  file=sys.stderr)
        out = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_state["params"]),
            opt_state=ocp.args.StandardRestore(abstract_state["opt_state"]),
            meta=ocp.args.JsonRestore(),
            data=ocp.args.JsonRestore(),
        ))
        meta = out["meta"]
        state = {"step": jnp.asarray(meta["step"], jnp.int32), "params": out["params"],
                 "opt_state": out["opt_state"], "rng": jnp.asarray(meta["rng"], jnp.uint32)}
        return state, (out["data"] or None)

    def _set_aside(self, restored: int) -> None:
        """Move the rejected steps newer than `restored` to `<out_dir>/checkpoints_rejected/` and
        point `latest_params.json` at the restored step."""
        if jax.process_index() == 0:
            dest = self.dir.parent / REJECTED_DIR
            dest.mkdir(exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            for s in sorted(self.rejected):
                if s > restored and self.step_dir(s).exists():
                    to = dest / f"{s}-{stamp}"
                    shutil.move(str(self.step_dir(s)), str(to))
                    print(f"warning: moved checkpoint {self.step_dir(s)} to {to}", file=sys.stderr)
            write_params_pointer(self.dir.parent, self.step_dir(restored) / "params", restored)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("funasr_jax:checkpoints_set_aside")
        self.manager.reload()

    def close(self):
        """Close the manager; an error while closing (after a failed save) is reported, not raised."""
        try:
            self.manager.close()
        except Exception as e:  # noqa: BLE001
            print(f"warning: closing {self.dir}: {type(e).__name__}: {_first_line(e)}", file=sys.stderr)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


def _strerror(code: int, e: BaseException) -> str:
    return os.strerror(code) if code else _first_line(e)
