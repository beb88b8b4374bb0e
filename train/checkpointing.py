"""Training checkpoints with orbax: params, optimizer state, step/RNG and the data-iterator state.

Layout (one `CheckpointManager` under `<out_dir>/checkpoints`):
    <step>/params     StandardSave  (`<out_dir>/latest_params.json` points `load_model` at the newest)
    <step>/opt_state  StandardSave  (trainable leaves only: frozen ones have no state)
    <step>/meta       JsonSave      {"step", "rng"}
    <step>/data       JsonSave      grain iterator state (exact data position)
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from funasr_jax.io.checkpoint import write_params_pointer


class TrainCheckpointer:
    def __init__(self, out_dir, keep: int):
        self.dir = Path(out_dir).absolute() / "checkpoints"
        self.manager = ocp.CheckpointManager(
            self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state, data_state) -> int:
        step = int(state["step"])
        meta = {"step": step, "rng": np.asarray(jax.random.key_data(state["rng"])
                                                 if jnp.issubdtype(state["rng"].dtype, jax.dtypes.prng_key)
                                                 else state["rng"]).tolist()}
        self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state["params"]),
            opt_state=ocp.args.StandardSave(state["opt_state"]),
            meta=ocp.args.JsonSave(meta),
            data=ocp.args.JsonSave(data_state if data_state is not None else {}),
        ), force=True)
        self.manager.wait_until_finished()
        if jax.process_index() == 0:
            write_params_pointer(self.dir.parent, self.dir / str(step) / "params", step)
        return step

    def restore(self, abstract_state, step: int | None = None):
        """-> (state, data_state) for `step` (default newest)."""
        step = self.latest_step() if step is None else step
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

    def close(self):
        self.manager.close()
