"""Hotword and contextual training prompts (funasr_jax/data/context.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from helpers.train import small_manifest

from funasr_jax.data.config import DataConfig
from funasr_jax.data.context import PromptContexts
from funasr_jax.data.manifest import ManifestError, read_manifests
from funasr_jax.text.hotwords import HotwordIndex
from funasr_jax.text.prompt import PREVIOUS_LABEL, with_context


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    # first_pass = the transcript less its last character: the hotwords are (nearly always) in it
    return read_manifests([small_manifest(tmp_path_factory.mktemp("ctx"), "train", 200, first_pass=True)])


def _cfg(**kw):
    return DataConfig(**kw).validate()


def test_hotword_lists_are_deterministic_and_never_list_own_words_as_distractors(examples):
    cfg = _cfg(hotword_prompt=True, hotword_distractors=8, hotword_none_share=0.2, hotword_own_drop_share=0.2)
    a, b = PromptContexts(cfg, examples), PromptContexts(cfg, examples)
    pool = {w for ex in examples for w in ex.hotwords}
    kinds = {"none": 0, "own": 0}
    for i, ex in enumerate(examples):
        words = a.of(i).hotwords
        assert words == b.of(i).hotwords
        assert len(words) <= cfg.hotword_top_k and len(set(words)) == len(words) and set(words) <= pool
        kinds["none"] += not words
        kinds["own"] += bool(set(words) & set(ex.hotwords))
    assert kinds["none"] > 0 and kinds["own"] > 0
    # only distractors: no own word ever appears; no list at all: empty
    only = PromptContexts(dataclasses.replace(cfg, hotword_none_share=0.0, hotword_own_drop_share=1.0), examples)
    assert all(not set(only.of(i).hotwords) & set(ex.hotwords) for i, ex in enumerate(examples))
    none = PromptContexts(dataclasses.replace(cfg, hotword_none_share=1.0, hotword_own_drop_share=0.0), examples)
    assert all(none.of(i).hotwords == () for i in range(len(examples)))


def test_retrieval_from_the_first_pass_keeps_what_it_contains(examples):
    cfg = _cfg(hotword_prompt=True, hotword_distractors=30, hotword_none_share=0.0, hotword_own_drop_share=0.0,
               hotword_threshold=1.0, hotword_keep_own=False)
    ctx = PromptContexts(cfg, examples)
    keep = PromptContexts(dataclasses.replace(cfg, hotword_keep_own=True), examples)
    assert all(set(ex.hotwords) <= set(keep.of(i).hotwords) for i, ex in enumerate(examples))
    checked = 0
    for i, ex in enumerate(examples):
        words = ctx.of(i).hotwords
        present = [w for w in ex.hotwords if HotwordIndex([w]).retrieve(ex.first_pass, 1, 1.0)]
        assert set(present) <= set(words)  # an exact match in the first pass is always retrieved
        for w in words:  # and nothing that does not match exactly
            assert HotwordIndex([w]).retrieve(ex.first_pass, 1, 1.0), (w, ex.first_pass)
        checked += bool(present)
    assert checked > 10


def test_planned_token_counts_equal_the_built_prompts(examples, tmp_path):
    from funasr_jax.data.datasets import make_train_data
    from funasr_jax.data.rows import count_tokens
    from funasr_jax.text.tokenizer import load_tokenizer
    from helpers.train import DEMO

    tok = load_tokenizer(str(DEMO / "tokenizer.model"))
    cfg = _cfg(tokenizer=str(DEMO / "tokenizer.model"), hotword_prompt=True, context_prompt=True,
               first_pass_prompt=True, batch_size=4, bucket_frames=(64, 128, 256))
    data = make_train_data(cfg, examples[:40], tok)
    text, _, _ = count_tokens(cfg, examples[:40], tok, None, data.loader.contexts)
    for i in range(40):
        p = data.loader._prompt(examples[i], i, 0, n_audio=7, max_tokens=10_000)
        assert len(p.input_ids) - p.n_audio == text[i]
    assert any(data.loader.contexts.of(i).passages for i in range(40))


def test_conversations_previous_transcripts_and_passages(examples, tmp_path):
    cfg = _cfg(context_prompt=True, context_chain=3, context_previous_share=1.0, context_irrelevant=5)
    ctx = PromptContexts(cfg, examples)
    by_subset: dict = {}
    for i, ex in enumerate(examples):
        by_subset.setdefault(ex.subset, []).append(i)
    for idx in by_subset.values():
        for p, i in enumerate(idx):
            c = ctx.of(i)
            assert c.previous == ("" if p % 3 == 0 else examples[idx[p - 1]].target)
            own = [q for q in c.passages if examples[i].hotwords and all(w in q for w in examples[i].hotwords)]
            assert len(c.passages) == 5 + bool(examples[i].hotwords) and (own or not examples[i].hotwords)
    # the prompt text: header, previous line, passages, then the instruction
    c = ctx.of(by_subset["free"][1])
    text = with_context("语音转写：", previous=c.previous, passages=c.passages)
    assert f"{PREVIOUS_LABEL}{c.previous}\n" in text and text.endswith("语音转写：")
    # the passages hook: a file's passages replace the templates for its keys
    key = examples[0].key
    f = tmp_path / "passages.jsonl"
    f.write_text(json.dumps({"key": key, "passages": ["这是外部写的资料。"]}, ensure_ascii=False) + "\n")
    hooked = PromptContexts(dataclasses.replace(cfg, context_passages_file=str(f)), examples)
    assert "这是外部写的资料。" in hooked.of(0).passages
    f.write_text('{"key": 3}\n')
    with pytest.raises(ManifestError, match="passages.jsonl:1"):
        PromptContexts(dataclasses.replace(cfg, context_passages_file=str(f)), examples)


@pytest.mark.parametrize("field,value", [("hotword_none_share", 1.5), ("hotword_top_k", 0),
                                         ("context_irrelevant", -1), ("hotword_threshold", "high")])
def test_bad_context_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"DataConfig.{field}"):
        DataConfig(**{field: value}).validate()


def test_masked_first_pass_garbles_the_listed_own_hotwords(examples):
    from funasr_jax.data.rows import example_instruction

    cfg = _cfg(hotword_prompt=True, hotword_none_share=0.0, hotword_own_drop_share=0.0, hotword_mask_share=1.0,
               first_pass_prompt=True)
    ctx = PromptContexts(cfg, examples)
    masked = 0
    for i, ex in enumerate(examples):
        c = ctx.of(i)
        zh_own = [w for w in ex.hotwords if w in c.hotwords and w in ex.first_pass and w.isascii() is False]
        if zh_own:  # a garbled CJK word never survives whole (a kept unit is always followed by an insert)
            assert all(w not in c.first_pass for w in zh_own), (ex.first_pass, c.first_pass)
            assert c.first_pass in example_instruction(cfg, ex, context=c)
            masked += 1
    assert masked > 10
    off = PromptContexts(dataclasses.replace(cfg, hotword_mask_share=0.0), examples)
    assert all(off.of(i).first_pass is None for i in range(len(examples)))
