"""llm_asr `Transformer` adaptor and the CTC branch (decoder + ctc_lo) vs FunASR's PyTorch classes.

Random weights (LayerNorms included), f32, a padded batch of three; weights move into Flax through
`funasr_jax.io.names.params_from_state_dict`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the Python 3.12 CI leg has no CPU torch wheel)")

from funasr_jax.io.names import CheckpointMismatchError, params_from_state_dict
from funasr_jax.models.adaptor import Transformer
from funasr_jax.models.config import AdaptorConfig
from funasr_jax.models.ctc_head import CTCLo, ctc_greedy, ctc_log_probs
from funasr_jax.models.encoder import ModelInputError
from helpers.torch_refs import (
    assert_close_valid,
    flax_params,
    llm_asr_transformer,
    padded_batch,
    randomize_,
    state_dict_np,
)

LENGTHS = [11, 7, 4]  # the longest fills T: FunASR's mask is built to max(lengths)
T = 11


def _adaptor_pair(k, remat=False, seed=0):
    ref = llm_asr_transformer(k, encoder_dim=48, llm_dim=64, ffn_dim=96, n_layer=2, attention_heads=4, seed=seed)
    cfg = AdaptorConfig(downsample_rate=k, encoder_dim=48, llm_dim=64, ffn_dim=96, n_layer=2, attention_heads=4)
    return ref, Transformer(cfg, remat=remat)


@pytest.mark.parametrize("k", [1, 2])
def test_adaptor_matches_funasr(k):
    ref, model = _adaptor_pair(k, seed=k)
    # Encoder-output-like magnitudes (after tp_norm the features are O(1) with LN gains).
    x = padded_batch(LENGTHS, T, 48, seed=k, scale=2.0)
    lens = np.asarray(LENGTHS, np.int32)
    params = flax_params(model, state_dict_np(ref, "audio_adaptor."), x, lens, prefix="audio_adaptor.")
    assert params["blocks"]["0"]["feed_forward"]["w_1"]["kernel"].shape == (64, 16)  # llm_dim // 4
    assert params["linear1"]["kernel"].shape == (48 * k, 96)
    with torch.no_grad():
        ref_y, ref_l = ref(torch.from_numpy(x.copy()), torch.from_numpy(lens).long())
    y, l = jax.jit(lambda p, a, n: model.apply({"params": p}, a, n))(params, jnp.asarray(x), jnp.asarray(lens))
    assert y.shape == (3, (T - 1) // k + 1, 64) and y.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(l), ref_l.numpy())
    assert_close_valid(y, ref_y.numpy(), ref_l.numpy(), f"adaptor k={k}")


def test_adaptor_no_lengths_means_all_valid_and_remat():
    ref, model = _adaptor_pair(2, remat=True, seed=5)
    x = padded_batch([T, T, T], T, 48, seed=5)
    lens = np.full(3, T, np.int32)
    params = flax_params(model, state_dict_np(ref), x, lens)
    with torch.no_grad():
        ref_y, _ = ref(torch.from_numpy(x.copy()), torch.from_numpy(lens).long())
    y, l = model.apply({"params": params}, jnp.asarray(x), None, deterministic=False)
    assert l is None
    assert_close_valid(y, ref_y.numpy(), [y.shape[1]] * 3, "adaptor lengths=None remat")


class _TorchCTCBranch(torch.nn.Module):
    def __init__(self, dim, n_layer, heads, vocab, seed):
        super().__init__()
        from funasr.models.ctc.ctc import CTC
        from funasr.models.llm_asr.adaptor import Transformer as TorchTransformer

        self.ctc_decoder = TorchTransformer(downsample_rate=1, encoder_dim=dim, llm_dim=dim, ffn_dim=2 * dim,
                                            n_layer=n_layer, attention_heads=heads)
        self.ctc = CTC(odim=vocab, encoder_output_size=dim)
        randomize_(self, seed)

    def forward(self, x, lens):
        h, hl = self.ctc_decoder(x, lens)
        return self.ctc.ctc_lo(h), self.ctc.log_softmax(h), hl


class _FlaxCTCBranch(nn.Module):
    cfg: AdaptorConfig
    vocab: int

    @nn.compact
    def __call__(self, x, lens):
        h, hl = Transformer(self.cfg, name="ctc_decoder")(x, lens)
        return CTCLo(self.vocab, name="ctc")(h), hl


def _torch_greedy(logp, lens, blank):
    """FunASR's inference_llm greedy CTC path."""
    out = []
    for i in range(logp.shape[0]):
        y = torch.unique_consecutive(logp[i, : int(lens[i])].argmax(dim=-1), dim=-1)
        out.append(y[y != blank].tolist())
    return out


def test_ctc_branch_matches_funasr():
    dim, vocab = 64, 7
    ref = _TorchCTCBranch(dim, n_layer=3, heads=4, vocab=vocab, seed=11)
    cfg = AdaptorConfig(downsample_rate=1, encoder_dim=dim, llm_dim=dim, ffn_dim=2 * dim, n_layer=3, attention_heads=4)
    model = _FlaxCTCBranch(cfg, vocab)
    t, lengths = 16, [16, 12, 5]
    x = padded_batch(lengths, t, dim, seed=11)
    lens = np.asarray(lengths, np.int32)
    sd = state_dict_np(ref)
    assert {k.split(".")[0] for k in sd} == {"ctc_decoder", "ctc"}
    params = flax_params(model, sd, x, lens)
    assert params["ctc"]["ctc_lo"]["kernel"].shape == (dim, vocab)
    with torch.no_grad():
        ref_logits, ref_logp, ref_l = ref(torch.from_numpy(x.copy()), torch.from_numpy(lens).long())
    logits, l = jax.jit(lambda p, a, n: model.apply({"params": p}, a, n))(params, jnp.asarray(x), jnp.asarray(lens))
    logp = ctc_log_probs(logits)
    assert logits.dtype == jnp.float32 and logits.shape == (3, t, vocab)
    assert_close_valid(logits, ref_logits.numpy(), lengths, "ctc logits")
    assert_close_valid(logp, ref_logp.numpy(), lengths, "ctc log-probs")
    blank = vocab - 1
    want = _torch_greedy(ref_logp, ref_l, blank)
    assert ctc_greedy(logp, l, blank) == want
    assert sum(map(len, want)) > 0


def test_ctc_greedy_brute_force():
    # frames: a a blank a b b | padding frames that must be ignored
    ids = [[1, 1, 0, 1, 2, 2, 3, 3], [0, 0, 0, 0, 0, 0, 0, 0], [2, 0, 2, 2, 0, 0, 1, 1]]
    logits = np.full((3, 8, 4), -5.0, np.float32)
    for b, row in enumerate(ids):
        for t, i in enumerate(row):
            logits[b, t, i] = 3.0
    got = ctc_greedy(ctc_log_probs(logits), [6, 8, 8], blank=0)
    assert got == [[1, 1, 2], [], [2, 2, 1]]
    assert ctc_greedy(logits, [0, 1, 2], blank=3) == [[], [0], [2, 0]]


def test_adaptor_misshaped_tensor_raises_naming_key():
    ref, model = _adaptor_pair(1)
    template = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 3, 48)), jnp.asarray([3]))["params"]
    sd = state_dict_np(ref, "audio_adaptor.")
    bad = "audio_adaptor.blocks.1.feed_forward.w_1.weight"
    sd[bad] = np.zeros((96, 64), np.float32)  # ffn_dim instead of llm_dim // 4
    with pytest.raises(CheckpointMismatchError, match=bad.replace(".", r"\.") + r": checkpoint has \(96, 64\)"):
        params_from_state_dict(sd, template, prefix="audio_adaptor.")


def test_adaptor_bad_input_is_named():
    _, model = _adaptor_pair(1)
    with pytest.raises(ModelInputError, match="encoder_dim"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 40)), jnp.asarray([3]))
