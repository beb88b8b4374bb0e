"""AED supervised encoder pre-training (recipe §4.1, after Best-RQ): encoder + attention decoder.

The SAN-M encoder and an attention decoder (`model.aed`: FunASR's TransformerDecoder, width =
the encoder's output size, CTC vocabulary, label smoothing 0.1) train on transcripts, jointly
with the CTC branch (`stage.ctc_weight`, 0.3 as in FunASR's AED recipes; set it to 0 for a pure
AED loss). The LLM is not run. Start from a Best-RQ run with `--set run.init_from=runs/bestrq`;
the encoder (and the CTC branch) then initialise an SFT stage through `run.init_from` (the SFT
model has no `aed_decoder`, so it is left behind). Dev error is the AED decoder's greedy output
(`python -m funasr_jax.evaluate --mode aed` scores it, `--beam` for beam search).
"""

import dataclasses

from configs.base import make_config
from funasr_jax.models.config import AEDConfig
from train.config import OptimConfig, RunConfig, StageConfig


def get_config(preset: str = "tiny"):
    cfg = make_config(
        preset,
        StageConfig(name="aed", trainable=("audio_encoder", "aed_decoder", "ctc_decoder", "ctc"), llm_weight=0.0,
                    ctc_weight=0.3, aed_weight=0.7),
        OptimConfig(lr=2e-3 if preset == "tiny" else 5e-4, warmup_steps=100),
        RunConfig(out_dir="runs/aed", steps=1000),
    )
    tiny = preset == "tiny"
    aed = AEDConfig(enabled=True, num_blocks=2 if tiny else 6, linear_units=256 if tiny else 2048,
                    dropout_rate=0.0 if tiny else 0.1, positional_dropout_rate=0.0 if tiny else 0.1)
    ctc = dataclasses.replace(cfg.model.ctc, detach_encoder=False)
    return dataclasses.replace(cfg, model=cfg.model.replace(aed=aed, ctc=ctc))
