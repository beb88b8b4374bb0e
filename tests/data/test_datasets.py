"""grain training data: static shapes, batch contents, determinism, resumption, sharding, bad audio."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os

import numpy as np
import pytest
import soundfile as sf
from helpers.data import (
    SR,
    CharCTC,
    CharTokenizer,
    assert_batches_equal,
    fbank_frames,
    write_corpus,
    write_noise,
)

from funasr_jax.audio.frontend import extract_features
from funasr_jax.data.config import DataConfig, DataError, StepNeeds
from funasr_jax.data.datasets import (
    load_text_tools,
    make_train_data,
    make_train_iterator,
    read_train_examples,
)
from funasr_jax.data.manifest import read_manifests
from funasr_jax.data.rows import count_tokens
from funasr_jax.models.config import audio_token_count

EDGES = (8, 16, 32, 64)  # LFR frames: 0.48 / 0.96 / 1.92 / 3.84 s
DURS = [0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.6, 1.9, 2.2, 2.5, 3.0, 3.5, 0.4, 0.8, 5.0]  # last: too long
LONG = 14


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    path = write_corpus(str(d), DURS)
    return {"dir": str(d), "manifest": path, "noise": write_noise(str(d / "noise")),
            "examples": read_manifests([path])}


def _cfg(corpus, **kw):
    base = {"train_files": (corpus["manifest"],), "batch_size": 4, "bucket_frames": EDGES, "max_target_tokens": 64,
            "token_multiple": 16, "seed": 5}
    base.update(kw)
    return DataConfig(**base)


def _aug(corpus, **kw):
    aug = {"noise_dir": corpus["noise"], "noise_prob": 0.6, "zero_pad_prob": 0.5, "zero_pad_max_s": 0.4,
           "speed_factors": (0.9, 1.0, 1.1)}
    return _cfg(corpus, **{**aug, **kw})


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_config_validate_names_field(corpus):
    _cfg(corpus).validate()
    for kw, field in [({"batch_size": 0}, "batch_size"), ({"bucket_frames": (64, 32)}, "bucket_frames"),
                      ({"noise_prob": 1.5}, "noise_prob"), ({"on_error": "ignore"}, "on_error"),
                      ({"speed_factors": (3.0,)}, "speed_factors"), ({"train_files": ["a"]}, "train_files"),
                      ({"snr_std": -1.0}, "snr_std"), ({"token_multiple": 0}, "token_multiple"),
                      ({"num_workers": -1}, "num_workers"), ({"max_train_utts": -3}, "max_train_utts")]:
        with pytest.raises(ValueError, match=f"DataConfig.{field}"):
            _cfg(corpus, **kw).validate()
    with pytest.raises(ValueError, match="process_count"):
        make_train_data(_cfg(corpus, batch_size=3), corpus["examples"], CharTokenizer(), process_count=2)


def test_batch_contents_static_shapes(corpus, caplog):
    tok, ctc = CharTokenizer(), CharCTC()
    exs = corpus["examples"]
    with caplog.at_level(logging.WARNING):
        td = make_train_data(_cfg(corpus), exs, tok, ctc, num_epochs=1)
    assert any(f"{exs[LONG].where}" in r.getMessage() and "largest bucket" in r.getMessage() for r in caplog.records)
    # per bucket: ceil(count / 4) batches; bucket = smallest edge e with fbank frames + 2 <= 6 e
    fb = [fbank_frames(round(d * SR)) + 2 for d in DURS]
    counts = [sum(1 for i, f in enumerate(fb) if i != LONG and f <= 6 * e and (k == 0 or f > 6 * EDGES[k - 1]))
              for k, e in enumerate(EDGES)]
    assert sum(counts) == len(DURS) - 1
    assert td.steps_per_epoch == sum(math.ceil(c / 4) for c in counts)
    seen = []
    for b in td.iterator():
        bsz, t_edge, dim = b.feats.shape
        assert (bsz, dim) == (4, 560) and t_edge in EDGES
        lt = b.input_ids.shape[1]
        assert lt % 16 == 0 and b.labels.shape == (4, lt) and b.ctc_labels.shape[1] % 16 == 0
        assert b.feats.dtype == np.float32 and b.input_ids.dtype == np.int32 and b.weight.dtype == np.float32
        for r in range(4):
            i = int(b.example_index[r])
            if i < 0:
                assert b.weight[r] == 0 and b.feat_lengths[r] == 0 and b.token_lengths[r] == 0
                assert not b.feats[r].any() and (b.labels[r] == -100).all()
                continue
            seen.append(i)
            ex = exs[i]
            wav, _ = sf.read(ex.audio_path, dtype="float32")
            t = int(b.feat_lengths[r])
            assert t == math.ceil(fbank_frames(len(wav)) / 6) <= t_edge
            np.testing.assert_array_equal(b.feats[r, :t], extract_features(wav))
            assert not b.feats[r, t:].any()
            n = int(b.audio_tokens[r])
            assert n == math.ceil(t / 8)
            s0, ln = int(b.audio_start[r]), int(b.token_lengths[r])
            ids, labels = b.input_ids[r], b.labels[r]
            assert (ids[s0:s0 + n] == 0).all() and ids[s0 - 1] != 0 and ids[s0 + n] != 0
            assert tok.decode(ids[:s0].tolist()).endswith("user\n" + ex.instruction)
            assert tok.decode(labels[labels != -100].tolist()) == ex.target + "<|im_end|>"
            assert tok.decode(ids[s0 + n:ln].tolist()) == (
                "<|im_end|>\n<|im_start|>assistant\n" + ex.target + "<|im_end|>")
            assert (ids[ln:] == tok.pad_id).all() and (labels[ln:] == -100).all()
            cl = int(b.ctc_label_lengths[r])
            assert "".join(CharCTC.chars[c] for c in b.ctc_labels[r, :cl]) == ex.target
            assert b.weight[r] == 1.0 and abs(b.audio_seconds[r] - len(wav) / SR) < 1e-6
    assert sorted(seen) == [i for i in range(len(DURS)) if i != LONG]
    # drop_remainder: only full batches
    td2 = make_train_data(_cfg(corpus, drop_remainder=True), exs, tok, num_epochs=1)
    assert td2.steps_per_epoch == sum(c // 4 for c in counts)
    assert all((b.example_index >= 0).all() and b.ctc_labels is None for b in td2.iterator())


def _fields(b):
    return {k: (v.shape, v.dtype) for k, v in b.arrays().items()}


def test_shapes_are_a_function_of_the_bucket(corpus):
    """Every batch of a bucket has that bucket's planned shape (and its template's fields), L_k
    being the bucket's longest row (text + audio placeholders of the edge) rounded up."""
    tok, ctc, exs = CharTokenizer(), CharCTC(), corpus["examples"]
    cfg = _aug(corpus)
    td = make_train_data(cfg, exs, tok, ctc, num_epochs=2)
    shapes = {s.bucket: s for s in td.bucket_shapes()}
    templates = {s.bucket: t for s, t in td.templates()}
    assert sorted(shapes) == [0, 1, 2, 3] and all(not t.weight.any() for t in templates.values())
    spe = td.steps_per_epoch
    for step, b in enumerate(td.iterator()):
        k = int(td.plan(step // spe).bucket[step % spe])
        s = shapes[k]
        assert (b.feats.shape[1], b.input_ids.shape[1], b.ctc_labels.shape[1]) == (s.frames, s.tokens, s.ctc_tokens)
        assert _fields(b) == _fields(templates[k])
    text, _, n_ctc = count_tokens(cfg, exs, tok, ctc)
    for k, s in shapes.items():
        members = [i for i in td.kept if (td.loader.planner.bucket_of[i] == k)]
        need = max(text[i] for i in members) + audio_token_count(EDGES[k])
        assert s.tokens == 16 * math.ceil(need / 16) and s.ctc_tokens == 16 * math.ceil(max(n_ctc[members]) / 16)


def test_micro_batches_of_a_step_share_a_bucket(corpus):
    tok, ctc, exs = CharTokenizer(), CharCTC(), corpus["examples"]
    k = 3
    for cfg in (_cfg(corpus), _cfg(corpus, shuffle=False), _cfg(corpus, drop_remainder=True, batch_size=1)):
        td = make_train_data(cfg, exs, tok, ctc, needs=StepNeeds(micro_batches=k))
        plan, b = td.plan(1), cfg.batch_size
        assert td.steps_per_epoch % k == 0 and len(plan.rows) == td.steps_per_epoch
        groups = plan.rows.reshape(-1, k, b)
        assert (plan.bucket.reshape(-1, k) == plan.bucket.reshape(-1, k)[:, :1]).all()
        real = plan.rows[plan.rows >= 0]
        assert len(set(real.tolist())) == len(real)
        if cfg.drop_remainder:
            assert (groups >= 0).all()
        else:
            assert sorted(real.tolist()) == sorted(td.kept.tolist())
            per_batch = (groups >= 0).sum(axis=2)  # padding dealt round-robin over a group's batches
            assert (per_batch.max(axis=1) - per_batch.min(axis=1) <= 1).all()
    # k = 1 plans what plain batching plans
    a = make_train_data(_aug(corpus), exs, tok, ctc).plan(0)
    one = make_train_data(_aug(corpus), exs, tok, ctc, needs=StepNeeds(micro_batches=1)).plan(0)
    np.testing.assert_array_equal(a.rows, one.rows)


def test_fields_the_step_does_not_read_are_left_out(corpus):
    tok, ctc, exs = CharTokenizer(), CharCTC(), corpus["examples"]
    td = make_train_data(_cfg(corpus), exs, tok, ctc, needs=StepNeeds(llm_labels=False, ctc_labels=False))
    assert all(s.ctc_tokens == 0 for s in td.bucket_shapes())
    b = next(td.iterator())
    assert b.labels is None and b.ctc_labels is None and b.ctc_label_lengths is None
    assert b.weight is not None and b.input_ids is not None
    assert _fields(b) == _fields({s.frames: t for s, t in td.templates()}[b.feats.shape[1]])
    with pytest.raises(ValueError, match="StepNeeds.micro_batches"):
        make_train_data(_cfg(corpus), exs, tok, ctc, needs=StepNeeds(micro_batches=0))


def test_fixed_lengths_and_the_error_naming_a_longer_example(corpus):
    tok, ctc, exs = CharTokenizer(), CharCTC(), corpus["examples"]
    planned = make_train_data(_cfg(corpus), exs, tok, ctc).bucket_shapes()
    longest, longest_ctc = max(s.tokens for s in planned), max(s.ctc_tokens for s in planned)
    td = make_train_data(_cfg(corpus, token_length=longest + 16, ctc_length=longest_ctc), exs, tok, ctc)
    assert {(s.tokens, s.ctc_tokens) for s in td.bucket_shapes()} == {(longest + 16, longest_ctc)}
    b = next(td.iterator())
    assert b.input_ids.shape[1] == longest + 16 and b.ctc_labels.shape[1] == longest_ctc
    with pytest.raises(DataError, match=r"train.jsonl:\d+ .*tokens exceed data.token_length=16.*raise data.token_length"):
        make_train_data(_cfg(corpus, token_length=16), exs, tok, ctc)
    with pytest.raises(ValueError, match="DataConfig.token_length"):
        _cfg(corpus, token_length=20).validate()
    with pytest.raises(ValueError, match="DataConfig.ctc_length"):
        _cfg(corpus, ctc_length=-16).validate()


def test_determinism_and_epoch_order(corpus):
    tok, exs = CharTokenizer(), corpus["examples"]
    cfg = _aug(corpus)
    spe = make_train_data(cfg, exs, tok).steps_per_epoch
    a = _take(make_train_iterator(cfg, exs, tok, CharCTC()), 2 * spe)
    b = _take(make_train_iterator(cfg, exs, tok, CharCTC()), 2 * spe)
    assert_batches_equal(a, b, strict=False)
    order = [np.concatenate([x.example_index for x in a[e * spe:(e + 1) * spe]]) for e in (0, 1)]
    assert sorted(order[0][order[0] >= 0].tolist()) == sorted(order[1][order[1] >= 0].tolist())
    assert not np.array_equal(order[0], order[1])
    c = _take(make_train_iterator(dataclasses.replace(cfg, seed=6), exs, tok), spe)
    assert not np.array_equal(np.concatenate([x.example_index for x in c]), order[0])


def test_state_roundtrip_mid_epoch(corpus):
    tok, exs = CharTokenizer(), corpus["examples"]
    cfg = _aug(corpus)
    it = make_train_iterator(cfg, exs, tok, CharCTC())
    _take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    expected = _take(it, 5)  # crosses into epoch 1 (4 steps per epoch)
    it2 = make_train_iterator(cfg, exs, tok, CharCTC())
    it2.set_state(state)
    assert_batches_equal(_take(it2, 5), expected, strict=False)


def test_process_sharding_concatenates(corpus):
    tok, exs = CharTokenizer(), corpus["examples"]
    cfg = _aug(corpus)
    full = _take(make_train_iterator(cfg, exs, tok, CharCTC()), 5)
    parts = [_take(make_train_iterator(cfg, exs, tok, CharCTC(), process_index=p, process_count=2), 5)
             for p in (0, 1)]
    for g, p0, p1 in zip(full, *parts):
        g, p0, p1 = g.arrays(), p0.arrays(), p1.arrays()
        assert p0["feats"].shape[0] == 2
        for k in g:
            np.testing.assert_array_equal(np.concatenate([p0[k], p1[k]]), g[k], err_msg=k)


def test_augmentation_applied_and_fits_bucket(corpus):
    tok, exs = CharTokenizer(), corpus["examples"]
    cfg = _aug(corpus, noise_prob=1.0, zero_pad_prob=1.0, speed_factors=())
    changed = padded = 0
    for b in _take(make_train_iterator(cfg, exs, tok), 4):
        for r in np.flatnonzero(b.weight > 0):
            ex = exs[int(b.example_index[r])]
            wav, _ = sf.read(ex.audio_path, dtype="float32")
            clean = extract_features(wav)
            t = int(b.feat_lengths[r])
            assert clean.shape[0] <= t <= b.feats.shape[1]
            padded += t > clean.shape[0]
            changed += not np.allclose(b.feats[r, :clean.shape[0]], clean, atol=1e-3)
    assert padded >= 6 and changed == len(exs) - 1


def test_corrupt_and_missing_audio(tmp_path, caplog):
    path = write_corpus(str(tmp_path), [0.5, 0.6, 0.7, 0.8, 0.9, 0.5])
    (tmp_path / "wav" / "1.wav").write_bytes(b"RIFF\x00\x01\x00\x00WAVEgarbage")
    os.remove(tmp_path / "wav" / "3.wav")
    sf.write(tmp_path / "wav" / "5.wav", np.zeros(SR * 2, np.float32), SR)  # manifest says 0.5 s
    exs = read_manifests([path])
    cfg = DataConfig(batch_size=4, bucket_frames=(16, 32), max_target_tokens=64, token_multiple=16, shuffle=False)
    with caplog.at_level(logging.WARNING, logger="funasr_jax.data.rows"):
        batches = list(make_train_iterator(cfg, exs, CharTokenizer(), num_epochs=1))
    assert [b.feats.shape for b in batches] == [(4, 16, 560), (4, 16, 560)]
    assert [b.input_ids.shape[1] % 16 for b in batches] == [0, 0]
    idx = np.concatenate([b.example_index for b in batches])
    w = np.concatenate([b.weight for b in batches])
    assert idx.tolist() == [0, -1, 2, -1, 4, -1, -1, -1] and w.tolist() == [1, 0, 1, 0, 1, 0, 0, 0]
    assert not batches[0].feats[1].any() and batches[0].feat_lengths[1] == 0
    msgs = [r.getMessage() for r in caplog.records]
    assert any(f"{path}:2" in m and "weight-0" in m for m in msgs)
    assert any(f"{path}:4" in m and "not found" in m for m in msgs)
    assert any(f"{path}:6" in m and "speech_length" in m for m in msgs)
    with pytest.raises(DataError, match=f"{path}:2"):
        list(make_train_iterator(dataclasses.replace(cfg, on_error="raise"), exs, CharTokenizer(), num_epochs=1))


def test_instruction_override(corpus):
    tok = CharTokenizer()
    cfg = _cfg(corpus, instruction_override="Speech transcription:")
    b = next(make_train_iterator(cfg, corpus["examples"], tok))
    r = int(np.flatnonzero(b.weight > 0)[0])
    s0 = int(b.audio_start[r])
    assert tok.decode(b.input_ids[r, :s0].tolist()) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nSpeech transcription:")


DEMO = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "data", "demo")


def test_demo_corpus_with_real_tokenizers():
    """The committed demo corpus through load_text_tools (sentencepiece LLM + CTC vocabularies)."""
    cfg = DataConfig(dev_files=(os.path.join(DEMO, "dev.jsonl"),), tokenizer=os.path.join(DEMO, "tokenizer.model"),
                     ctc_tokenizer=os.path.join(DEMO, "tokenizer.model"), batch_size=4, bucket_frames=(32, 64, 96),
                     shuffle=False)
    tok, ctc = load_text_tools(cfg)
    exs = read_manifests(cfg.dev_files)[:6]
    td = make_train_data(cfg, exs, tok, ctc, num_epochs=1)
    assert len(td.kept) == 6
    speech_markers = {tok.token_to_id("<|startofspeech|>"), tok.token_to_id("<|endofspeech|>")}
    seen = []
    for b in td.iterator():
        for r in np.flatnonzero(b.weight > 0):
            ex = exs[int(b.example_index[r])]
            ids, labels = b.input_ids[r], b.labels[r]
            assert tok.decode(labels[labels != -100].tolist(), skip_special=False) == ex.target + "<|im_end|>"
            s0, n, ln = int(b.audio_start[r]), int(b.audio_tokens[r]), int(b.token_lengths[r])
            assert tok.decode(ids[:s0].tolist(), skip_special=False) == (
                f"<|im_start|>system\n{ex.system}<|im_end|>\n<|im_start|>user\n{ex.instruction}")
            assert not speech_markers & set(ids[:ln].tolist())
            assert ctc.decode(b.ctc_labels[r, :b.ctc_label_lengths[r]].tolist()) == ex.target
            assert n == math.ceil(b.feat_lengths[r] / 8)
            seen.append(int(b.example_index[r]))
    assert sorted(seen) == list(range(6))


def test_max_train_utts_keeps_the_first_examples_in_file_order(corpus):
    keys = [ex.key for ex in corpus["examples"]]
    assert [ex.key for ex in read_train_examples(_cfg(corpus))] == keys
    assert [ex.key for ex in read_train_examples(_cfg(corpus, max_train_utts=5))] == keys[:5]
    assert [ex.key for ex in read_train_examples(_cfg(corpus, max_train_utts=10_000))] == keys


def _first_pass_corpus(tmp_path, n=12):
    """A manifest whose audio does not exist, with `first_pass` = the target (text-only rows)."""
    from helpers.data import WORDS, line
    lines = [line(f"u{i}", f"missing/{i}.wav", " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3 + i % 4)),
                  500 + 10 * i, first_pass=" ".join(WORDS[(i + k) % len(WORDS)] for k in range(3 + i % 4)))
             for i in range(n)]
    path = tmp_path / "fp.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path), read_manifests([str(path)])


def test_text_only_rows_read_no_audio_and_corrupt_the_first_pass(tmp_path):
    tok = CharTokenizer()
    path, exs = _first_pass_corpus(tmp_path)
    cfg = DataConfig(train_files=(path,), batch_size=4, bucket_frames=EDGES, token_multiple=16, seed=3,
                     text_only=True, first_pass_prompt=True, first_pass_noise=0.3, on_error="raise")
    td = make_train_data(cfg, exs, tok, num_epochs=2)
    assert len(td.kept) == len(exs)  # no audio-length filter: 83+ LFR frames > EDGES[-1]
    batches = list(td.iterator())
    assert len(batches) == 2 * td.steps_per_epoch == 6
    lines = {}
    for step, b in enumerate(batches):
        assert b.feats.shape == (4, 1, 560) and not b.feats.any()
        assert (b.feat_lengths == 0).all() and (b.audio_tokens == 0).all()
        for r in np.flatnonzero(b.weight > 0):
            ex = exs[int(b.example_index[r])]
            ids, labels, ln = b.input_ids[r], b.labels[r], int(b.token_lengths[r])
            assert tok.decode(labels[labels != -100].tolist()) == ex.target + "<|im_end|>"
            text = tok.decode(ids[:ln].tolist())
            head = "<|im_start|>user\n一遍解码结果："
            fp = text[text.index(head) + len(head):].split("\n")[0]
            assert text.endswith("<|im_end|>\n<|im_start|>assistant\n" + ex.target + "<|im_end|>")
            lines[(step // td.steps_per_epoch, ex.key)] = fp
    assert len(lines) == 2 * len(exs)
    changed = [k for k, fp in lines.items() if fp != exs[[e.key for e in exs].index(k[1])].target]
    assert 0 < len(changed) < len(lines)  # shares are drawn in [0, 0.6]: some rows stay clean
    assert any(lines[(0, ex.key)] != lines[(1, ex.key)] for ex in exs)  # redrawn every epoch
    again = list(make_train_data(cfg, exs, tok, num_epochs=2).iterator())
    assert_batches_equal(batches, again)
    clean = list(make_train_data(dataclasses.replace(cfg, first_pass_noise=0.0), exs, tok, num_epochs=1).iterator())
    for b in clean:
        for r in np.flatnonzero(b.weight > 0):
            ex = exs[int(b.example_index[r])]
            assert f"一遍解码结果：{ex.first_pass}\n" in tok.decode(b.input_ids[r, :b.token_lengths[r]].tolist())
    for kw, field in [({"first_pass_noise": 0.7}, "first_pass_noise"),
                      ({"first_pass_noise": 0.2, "first_pass_prompt": False}, "first_pass_noise"),
                      ({"text_only": 1}, "text_only")]:
        with pytest.raises(ValueError, match=f"DataConfig.{field}"):
            dataclasses.replace(cfg, **kw).validate()
