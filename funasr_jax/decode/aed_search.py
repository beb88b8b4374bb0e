"""Greedy and beam decoding of the AED head (`funasr_jax.models.aed`), reusing the LLM's loops.

The decoder is wrapped as `AEDSearchDecoder` (the duck-typed causal decoder of
`decode.generate` / `decode.beam`); the prompt is the start id alone, so generation starts at
position 1 exactly as FunASR's `forward_one_step` does after `<sos>`. Output ids are CTC-vocabulary
labels; EOS (= the start id = the CTC blank) is stripped.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from funasr_jax.decode.beam import beam_search
from funasr_jax.decode.generate import greedy_generate
from funasr_jax.models.aed import AEDDecoder, AEDSearchDecoder, strip_ids


def aed_decode(decoder: AEDDecoder, params, memory, memory_lengths, *, sos_eos: int, beam: int = 1,
               max_new_tokens: int = 64, length_penalty: float = 0.0, row_max_new_tokens=None):
    """Transcripts of encoder outputs.

    decoder: the AED module; params: its params (`params["aed_decoder"]` of the whole model);
    memory [B, T, d] encoder output, memory_lengths [B]; beam 1 = greedy.
    Returns (ids: list of B label-id lists without EOS, tokens [B, N] int32 with EOS, lengths [B]).
    """
    b = memory.shape[0]
    search = AEDSearchDecoder(decoder)
    search_params = {"aed": params, "memory": jnp.asarray(memory, jnp.float32),
                     "memory_lengths": jnp.asarray(memory_lengths, jnp.int32)}
    start = jnp.full((b, 1), sos_eos, jnp.int32)
    prompt = search.embed(search_params, start)
    ones = jnp.ones((b,), jnp.int32)
    kw = dict(max_new_tokens=max_new_tokens, eos_id=sos_eos, pad_id=sos_eos, row_max_new_tokens=row_max_new_tokens)
    if beam == 1:
        tokens, lengths = greedy_generate(search, search_params, prompt, ones, **kw)
    else:
        tokens, lengths, _ = beam_search(search, search_params, prompt, ones, beam=beam,
                                         length_penalty=length_penalty, **kw)
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    return strip_ids(tokens, lengths, sos_eos), tokens, lengths
