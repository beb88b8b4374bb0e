"""The whole model against FunASR's PyTorch `FunASRNano` (random weights, tiny sizes), and the
converter: from-torch, to-torch round trip, export loadable by FunASRNano, bad checkpoints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the Python 3.12 CI leg has no CPU torch wheel)")
import yaml

from funasr_jax import convert
from funasr_jax.io import funasr_torch
from funasr_jax.io.checkpoint import load_model, save_params
from funasr_jax.io.names import CheckpointMismatchError
from funasr_jax.models.config import (AdaptorConfig, CTCConfig, EncoderConfig, FunASRConfig, Qwen3Config,
                                      audio_token_count)
from funasr_jax.models.funasr import FunASRNano, abstract_params, component_counts
from funasr_jax.models.losses import llm_cross_entropy
from funasr_jax.models.batch import Batch
from funasr_jax.io.funasr_torch import params_from_torch
from funasr_jax.models.stack import to_layout
from helpers.torch_refs import randomize_

jax.config.update("jax_default_matmul_precision", "highest")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_cfg(tie: bool) -> FunASRConfig:
    return FunASRConfig(
        encoder=EncoderConfig(input_size=560, output_size=64, attention_heads=4, linear_units=128,
                              num_blocks=3, tp_blocks=2),
        adaptor=AdaptorConfig(encoder_dim=64, llm_dim=48, ffn_dim=96, n_layer=2, attention_heads=4),
        llm=Qwen3Config(vocab_size=101, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=10000.0,
                        tie_word_embeddings=tie, max_position_embeddings=512),
        ctc=CTCConfig(decoder=AdaptorConfig(encoder_dim=64, llm_dim=64, ffn_dim=96, n_layer=2, attention_heads=4),
                      vocab_size=37),
    )


def write_model_dir(tmp_path, cfg: FunASRConfig, name="m"):
    """A Fun-ASR-style directory (config.yaml + Qwen3 config.json) for `cfg`; no model.pt yet."""
    d = tmp_path / name
    (d / convert.QWEN_DIR).mkdir(parents=True)
    conf = funasr_torch.funasr_config_to_yaml(cfg, "fp32")
    (d / "config.yaml").write_text(yaml.safe_dump(conf))
    (d / convert.QWEN_DIR / "config.json").write_text(json.dumps(convert.qwen3_config_to_hf(cfg.llm)))
    return d


def torch_funasr_nano(model_dir):
    """FunASR's FunASRNano built from our exported config.yaml (random weights)."""
    from funasr.models.fun_asr_nano.model import FunASRNano as TorchNano

    conf = yaml.safe_load((model_dir / "config.yaml").read_text())
    conf["llm_conf"]["init_param_path"] = str(model_dir / convert.QWEN_DIR)
    conf.pop("model")
    torch.manual_seed(0)
    m = TorchNano(**conf, ctc_tokenizer="CharTokenizer", ctc_tokenizer_conf={})
    return randomize_(m, seed=3)


def make_batch(cfg, rng, lengths=(23, 17, 9), n_target=(5, 7, 3), prefix=6, suffix=3):
    """Features and a FunASR-style prompt batch: prefix tokens, N placeholders, suffix, target."""
    b = len(lengths)
    t = max(lengths)
    feats = rng.standard_normal((b, t, 560)).astype(np.float32)
    for i, n in enumerate(lengths):
        feats[i, n:] = 0.0
    rows, labels, starts, ns = [], [], [], []
    for i, n in enumerate(lengths):
        na = int(audio_token_count(n))
        ids = list(rng.integers(1, cfg.llm.vocab_size, prefix)) + [0] * na + list(rng.integers(1, cfg.llm.vocab_size, suffix))
        tgt = list(rng.integers(1, cfg.llm.vocab_size, n_target[i]))
        rows.append(ids + tgt)
        labels.append([-100] * len(ids) + tgt)
        starts.append(prefix)
        ns.append(na)
    length = max(len(r) for r in rows)
    input_ids = np.zeros((b, length), np.int64)
    lab = np.full((b, length), -100, np.int64)
    mask = np.zeros((b, length), np.int64)
    for i, (r, lb) in enumerate(zip(rows, labels)):
        input_ids[i, : len(r)] = r
        lab[i, : len(lb)] = lb
        mask[i, : len(r)] = 1
    return dict(feats=feats, feat_lengths=np.array(lengths, np.int32), input_ids=input_ids, labels=lab,
                attention_mask=mask, audio_start=np.array(starts), audio_tokens=np.array(ns),
                token_lengths=mask.sum(1).astype(np.int32))


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def pair(request, tmp_path_factory):
    cfg = small_cfg(request.param)
    d = write_model_dir(tmp_path_factory.mktemp("nano"), cfg)
    tm = torch_funasr_nano(d)
    sd = tm.state_dict()
    if request.param:  # the release stores a tied lm_head copy
        assert "llm.lm_head.weight" in sd
    torch.save({k: v.clone() for k, v in sd.items()}, d / "model.pt")
    got_cfg, params, _ = convert.load_funasr_dir(d, allow_missing=())
    return cfg, got_cfg, params, tm, d


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def test_config_roundtrip_through_yaml(pair):
    cfg, got_cfg, *_ = pair
    assert got_cfg == cfg


@pytest.mark.parametrize("scan", [False, True], ids=["per-layer", "stacked"])
def test_whole_model_matches_funasr(pair, scan):
    """Stacked: the same model.pt read into the layers-stacked-at-rest layout (`scan_layers`) by the
    converter, run scanned, against FunASR's PyTorch model directly."""
    cfg, _, params, tm, d = pair
    if scan:
        cfg = cfg.replace(scan_layers=True)
        params = params_from_torch(torch.load(d / "model.pt", weights_only=True), cfg, allow_missing=())
        assert "stacked" in params["llm"]["model"]["layers"] and "stacked" in params["audio_encoder"]["encoders"]
    batch = make_batch(cfg, np.random.default_rng(1))
    model = FunASRNano(cfg)
    inputs = Batch(feats=jnp.asarray(batch["feats"]), feat_lengths=jnp.asarray(batch["feat_lengths"]),
                   input_ids=jnp.asarray(batch["input_ids"], jnp.int32), token_lengths=jnp.asarray(batch["token_lengths"]),
                   audio_start=jnp.asarray(batch["audio_start"], jnp.int32),
                   audio_tokens=jnp.asarray(batch["audio_tokens"], jnp.int32))
    out = model.apply({"params": params}, inputs)
    ours_loss = float(llm_cross_entropy(out["logits"], jnp.asarray(batch["labels"], jnp.int32))["loss"])

    captured = {}
    def grab(_mod, _args, output):
        captured["logits"] = output.logits.detach()  # returns None: the output is left alone

    h = tm.llm.register_forward_hook(grab)
    with torch.no_grad():
        loss, _, _ = tm(
            speech=torch.from_numpy(batch["feats"].copy()), speech_lengths=torch.from_numpy(batch["feat_lengths"]).long(),
            input_ids=torch.from_numpy(batch["input_ids"].copy()), attention_mask=torch.from_numpy(batch["attention_mask"].copy()),
            labels_ids=torch.from_numpy(batch["labels"].copy()), fbank_beg=torch.from_numpy(batch["audio_start"][:, None].copy()),
            fbank_mask=None, fake_token_len=torch.from_numpy(batch["audio_tokens"][:, None].copy()))
    h.remove()
    ref_logits = captured["logits"].numpy()
    mask = batch["attention_mask"].astype(bool)
    err = _rel(np.asarray(out["logits"])[mask], ref_logits[mask])
    assert err <= 1e-4, f"LLM logits rel err {err}"
    assert abs(ours_loss - float(loss)) <= 1e-4 * max(1.0, abs(float(loss))), (ours_loss, float(loss))

    # encoder + adaptor (FunASRNano.forward_export) and the CTC branch
    feats_t = torch.from_numpy(batch["feats"].copy())
    lens_t = torch.from_numpy(batch["feat_lengths"]).long()
    with torch.no_grad():
        enc_t, enc_len_t = tm.audio_encoder(feats_t.clone(), lens_t)
        ada_t, _ = tm.audio_adaptor(enc_t, enc_len_t)
        ctc_t = tm.ctc.ctc_lo(tm.ctc_decoder(enc_t, enc_len_t)[0])
    enc, enc_len = model.apply({"params": params}, jnp.asarray(batch["feats"]), batch["feat_lengths"], method="encode")
    ada, _ = model.apply({"params": params}, enc, enc_len, method="adapt")
    for i, n in enumerate(batch["feat_lengths"]):
        assert _rel(np.asarray(enc)[i, :n], enc_t.numpy()[i, :n]) <= 1e-4
        assert _rel(np.asarray(ada)[i, :n], ada_t.numpy()[i, :n]) <= 1e-4
        assert _rel(np.asarray(out["ctc_logits"])[i, :n], ctc_t.numpy()[i, :n]) <= 1e-4


@pytest.mark.parametrize("scan", [False, True], ids=["per-layer", "stacked"])
def test_to_torch_roundtrip_and_funasr_loads_export(pair, scan, tmp_path):
    """from-torch -> (stacked) checkpoint -> to-torch gives back every tensor bit-exactly."""
    cfg, _, params, tm, d = pair
    if scan:
        cfg = cfg.replace(scan_layers=True)
        params = to_layout(params, abstract_params(cfg))
    ck = tmp_path / "ck"
    save_params(ck, params, cfg)
    out = tmp_path / "export"
    rc = subprocess.run([sys.executable, "-m", "funasr_jax.convert", "to-torch", "--checkpoint", str(ck),
                         "--out", str(out), "--dtype", "f32"], cwd=ROOT, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    exported = torch.load(out / "model.pt", weights_only=True)
    original = torch.load(d / "model.pt", weights_only=True)
    assert set(exported) == set(original)
    for k, v in original.items():
        assert torch.equal(exported[k], v), f"{k} differs after from-torch -> to-torch"
    # FunASR loads the export with every key matched and reproduces the original model.
    fresh = torch_funasr_nano(out)
    result = fresh.load_state_dict(exported, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 11, 560)
    lens = torch.tensor([11, 6])
    with torch.no_grad():
        a, _ = fresh.audio_encoder(x.clone(), lens)
        b, _ = tm.audio_encoder(x.clone(), lens)
    assert torch.equal(a, b)


def test_bf16_release_roundtrip_is_bit_exact(tmp_path):
    cfg = small_cfg(True)
    d = write_model_dir(tmp_path, cfg)
    tm = torch_funasr_nano(d)
    sd = {k: (v.to(torch.bfloat16) if not k.startswith(("ctc.", "ctc_decoder.")) else v.clone())
          for k, v in tm.state_dict().items()}
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, d / "model.pt")
    got_cfg, params, _ = convert.load_funasr_dir(d)
    ck = tmp_path / "ck"
    save_params(ck, params, got_cfg)
    out = tmp_path / "bf16"
    assert convert.main(["to-torch", "--checkpoint", str(ck), "--out", str(out), "--dtype", "bf16"]) == 0
    exported = torch.load(out / "model.pt", weights_only=True)
    for k, v in sd.items():
        assert exported[k].dtype == v.dtype, k
        assert torch.equal(exported[k], v), k


def test_missing_ctc_allowed_and_misshaped_named(tmp_path, capsys):
    cfg = small_cfg(True)
    d = write_model_dir(tmp_path, cfg)
    sd = torch_funasr_nano(d).state_dict()
    no_ctc = {k: v for k, v in sd.items() if not k.startswith(("ctc.", "ctc_decoder."))}
    torch.save(no_ctc, d / "model.pt")
    with pytest.warns(UserWarning, match="CTC tensors are missing"):
        _, params, _ = convert.load_funasr_dir(d)
    assert "ctc_decoder" in params
    with pytest.raises(CheckpointMismatchError, match="missing tensors"):
        convert.load_funasr_dir(d, allow_missing=())
    bad = dict(sd)
    bad["audio_adaptor.linear1.weight"] = torch.zeros(3, 3)
    torch.save(bad, d / "model.pt")
    rc = convert.main(["from-torch", "--model-dir", str(d), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "audio_adaptor.linear1.weight" in err and "(3, 3)" in err
    (d / "model.pt").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="model.pt"):
        convert.load_funasr_dir(d)


def test_nano_preset_parameter_counts():
    from funasr_jax.models.config import nano_config

    counts = component_counts(abstract_params(nano_config()))
    assert counts["audio_encoder"] == 221_136_992
    assert counts["audio_adaptor"] == 12_604_928
    assert counts["llm"] == 596_049_920
    assert counts["ctc_decoder"] == 8_021_632
    assert counts["ctc"] == 31_044_195


def test_checkpoint_load_roundtrip(tmp_path):
    cfg = small_cfg(False)
    from funasr_jax.models.funasr import init_params

    params = init_params(cfg, jax.random.PRNGKey(0))
    save_params(tmp_path / "c", params, cfg)
    m = load_model(tmp_path / "c")
    assert m.cfg == cfg
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(m.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    bad_cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, linear_units=64))
    from funasr_jax.io.checkpoint import write_meta, CheckpointError

    write_meta(tmp_path / "c", bad_cfg)
    with pytest.raises(CheckpointError, match="params"):
        load_model(tmp_path / "c")
    bad_cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, hidden_size=32))
    write_meta(tmp_path / "c", bad_cfg)
    with pytest.raises(CheckpointError, match="llm_dim"):
        load_model(tmp_path / "c")


def test_from_hf_qwen3_safetensors(tmp_path):
    """`convert from-hf` loads a Hugging Face Qwen3 folder (safetensors) into the LLM part."""
    from transformers import Qwen3Config as HFQwen3Config, Qwen3ForCausalLM

    hf_cfg = HFQwen3Config(vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=10000.0,
                           tie_word_embeddings=True, max_position_embeddings=256)
    torch.manual_seed(0)
    hf = randomize_(Qwen3ForCausalLM(hf_cfg), seed=5)
    qdir = tmp_path / "qwen"
    hf.save_pretrained(qdir, safe_serialization=True)
    out = tmp_path / "ck"
    assert convert.main(["from-hf", "--qwen3-dir", str(qdir), "--out", str(out), "--preset", "tiny"]) == 0
    m = load_model(out)
    assert m.cfg.llm.hidden_size == 48 and m.cfg.adaptor.llm_dim == 48 and m.cfg.llm.tie_word_embeddings
    ids = torch.tensor([[5, 17, 3, 88, 42, 7]])
    with torch.no_grad():
        ref = hf(input_ids=ids).logits.numpy()
    from funasr_jax.models.qwen3 import Qwen3ForCausalLM as JaxQwen3

    llm = JaxQwen3(m.cfg.llm)
    emb = llm.apply({"params": m.params["llm"]}, jnp.asarray(ids.numpy(), jnp.int32), method="embed")
    ours, _ = llm.apply({"params": m.params["llm"]}, emb)
    assert _rel(np.asarray(ours), ref) <= 1e-4
    # read stacked at rest ([L, ...] under model/layers/stacked) and run scanned: same logits
    from funasr_jax.io.hf_qwen3 import llm_params_from_hf

    stacked = llm_params_from_hf(qdir, m.cfg.llm, scan_layers=True)
    assert stacked["model"]["layers"]["stacked"]["mlp"]["up_proj"]["kernel"].shape == (2, 48, 96)
    llm_s = JaxQwen3(m.cfg.llm, scan_layers=True)
    ours_s, _ = llm_s.apply({"params": stacked}, llm_s.apply({"params": stacked}, jnp.asarray(ids.numpy(), jnp.int32),
                                                             method="embed"))
    assert _rel(np.asarray(ours_s), ref) <= 1e-4
    # a folder without weights is named in the error
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((qdir / "config.json").read_text())
    assert convert.main(["from-hf", "--qwen3-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 2


def test_scripting_api_matches_funasr(pair, tmp_path):
    """funasr_jax.infer.api on a converted checkpoint reproduces FunASR's encoder, adaptor and loss."""
    import funasr_jax.api as fa

    cfg, _, params, tm, _ = pair
    save_params(tmp_path / "ck", params, cfg)
    m = fa.load(tmp_path / "ck")
    wav = os.path.join(ROOT, "tests", "fixtures", "audio", "en.flac")
    feats, lengths = fa.features([wav, wav])
    enc, enc_lengths = fa.encoder_output(m, feats, lengths)
    audio = fa.adaptor_output(m, enc, enc_lengths)
    with torch.no_grad():
        enc_t, lens_t = tm.audio_encoder(torch.from_numpy(feats.copy()), torch.from_numpy(lengths).long())
        ada_t, _ = tm.audio_adaptor(enc_t, lens_t)
    assert _rel(np.asarray(enc), enc_t.numpy()) <= 1e-4
    assert _rel(np.asarray(audio), ada_t.numpy()) <= 1e-4
    assert fa.ctc_logits(m, feats, lengths).shape == (2, feats.shape[1], cfg.ctc.vocab_size)
