"""Decoding: LLM greedy generation with a functional KV cache."""

from funasr_jax.decode.beam import beam_search
from funasr_jax.decode.generate import (
    CausalDecoder,
    DecodeState,
    GenerateInputError,
    decode_step,
    generated_lengths,
    greedy_generate,
    left_pad,
    prefill,
    prompt_mask_positions,
)

__all__ = [
    "CausalDecoder", "DecodeState", "beam_search", "GenerateInputError", "decode_step", "generated_lengths",
    "greedy_generate", "left_pad", "prefill", "prompt_mask_positions",
]
