"""Shards (`python -m funasr_jax.data.pack`, `data.shards`): every source format packs and reads back
exactly, a killed pack resumes, bad rows are named by file:line, and training reads shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.data import SR, CharCTC, CharTokenizer, assert_batches_equal, tone
from helpers.train import DEMO, small_manifest

from funasr_jax.data.config import DataConfig
from funasr_jax.data.datasets import make_train_data, make_train_iterator
from funasr_jax.audio.io import AudioError
from funasr_jax.data.manifest import ManifestError, example_audio, read_manifests, require_jsonl
from funasr_jax.data.pack import PackError, pack

TEXTS = ["alpha bravo", "charlie", "delta echo foxtrot", "golf", "hotel india", "juliet"]


def _wav(folder: Path, name: str, seconds: float, i: int, sr: int = SR, channels: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x = tone(seconds, freq=200 + 41 * i, seed=i)
    if sr != SR:
        x = x[: int(seconds * sr)]
    if channels > 1:
        x = np.stack([x, -0.5 * x], axis=1)
    p = folder / name
    sf.write(p, x, sr, subtype="PCM_16")
    return p


def _reference(path, start=0, frames=-1) -> np.ndarray:
    """soundfile's own read of the original (mono mean), the independent reference."""
    x, _ = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
    return x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]


def _kaldi(d: Path) -> dict:
    """A Kaldi dir of 4 utterances (one stereo); returns {key: (path, text)}."""
    want = {}
    for i in range(4):
        p = _wav(d / "wav", f"k{i}.wav", 0.4 + 0.1 * i, i, channels=2 if i == 3 else 1)
        want[f"k{i}"] = (str(p), TEXTS[i])
    (d / "wav.scp").write_text("".join(f"{k} wav/{Path(p).name}\n" for k, (p, _) in want.items()))
    (d / "text").write_text("".join(f"{k} {t}\n" for k, (_, t) in want.items()))
    (d / "utt2lang").write_text("".join(f"{k} en\n" for k in want))
    return want


def _lhotse(d: Path):
    lhotse = pytest.importorskip("lhotse", reason="lhotse not installed (pip install lhotse)")
    cuts, want = [], {}
    for i in range(3):
        p = _wav(d, f"l{i}.wav", 0.6, 10 + i)
        rec = lhotse.Recording.from_file(str(p))
        cut = rec.to_cut()
        cut.supervisions = [lhotse.SupervisionSegment(id=f"s{i}", recording_id=rec.id, start=0.0,
                                                      duration=rec.duration, text=TEXTS[i], language="English")]
        if i == 2:  # a cut inside a longer recording: packed as a slice
            cut = cut.truncate(offset=0.1, duration=0.3)
            want[cut.id] = (str(p), TEXTS[i], 1600, 4800)
        else:
            want[cut.id] = (str(p), TEXTS[i], 0, -1)
        cuts.append(cut)
    path = d / "cuts.jsonl.gz"
    lhotse.CutSet.from_cuts(cuts).to_file(str(path))
    return path, want


def _hf(d: Path):
    datasets = pytest.importorskip("datasets", reason="datasets not installed (pip install datasets)")
    paths = [_wav(d / "wav", f"h{i}.wav", 0.5, 20 + i) for i in range(3)]
    ds = datasets.Dataset.from_dict({"audio": [str(p) for p in paths], "text": TEXTS[3:],
                                     "id": [f"h{i}" for i in range(3)]}).cast_column("audio", datasets.Audio())
    ds.save_to_disk(str(d / "ds"))
    return d / "ds", {f"h{i}": (str(p), TEXTS[3 + i]) for i, p in enumerate(paths)}


def _jsonl_source(d: Path):
    path = small_manifest(d, "train", 6)
    return ("jsonl", path), {ex.key: ex for ex in read_manifests([path])}


def _kaldi_source(d: Path):
    return ("kaldi", str(d)), {k: (p, t, "en", 0, -1) for k, (p, t) in _kaldi(d).items()}


def _lhotse_source(d: Path):
    path, want = _lhotse(d)
    return ("lhotse", str(path)), {k: (p, t, "en", s, n) for k, (p, t, s, n) in want.items()}


def _hf_source(d: Path):
    path, want = _hf(d)
    return ("hf", str(path)), {k: (p, t, None, 0, -1) for k, (p, t) in want.items()}


SOURCES = {"jsonl": _jsonl_source, "kaldi": _kaldi_source, "lhotse": _lhotse_source, "hf": _hf_source}


@pytest.mark.parametrize("fmt", list(SOURCES))
def test_each_format_packs_and_reads_back_exactly(fmt, tmp_path):
    """Every row, its text and its samples (soundfile reading the original file) come back from the shards."""
    source, want = SOURCES[fmt](tmp_path / fmt)
    r = pack([source], tmp_path / "out", shard_size=2, log=lambda s: None)
    assert r.complete and r.summary["records"] == len(want) and r.shards_total == -(-len(want) // 2)
    got = read_manifests([tmp_path / "out" / "shards.json"])
    assert sorted(ex.key for ex in got) == sorted(want)
    seconds = 0.0
    for ex in got:
        wave = example_audio(ex)
        seconds += len(wave) / SR
        assert ex.shard_ref is not None and ex.speech_length > 0
        if fmt == "jsonl":  # every field of the JSONL line, and the file's samples (Ogg/Opus)
            ref = want[ex.key]
            for f in ("system", "instruction", "target", "language", "hotwords", "subset", "speech_length",
                      "text_length", "first_pass"):
                assert getattr(ex, f) == getattr(ref, f), f
            np.testing.assert_array_equal(wave, _reference(ref.audio_path))
            assert ex.where == ref.where
        else:
            path, text, lang, start, frames = want[ex.key]
            assert (ex.target, ex.language) == (text, lang)
            np.testing.assert_array_equal(wave, _reference(path, start, frames))
    man = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert sum(s["records"] for s in man["shards"]) == len(want)
    assert man["hours"] == pytest.approx(seconds / 3600, abs=1e-4)


def test_mixed_sources_in_one_pack(tmp_path):
    (j, jw), (k, kw) = _jsonl_source(tmp_path / "j"), _kaldi_source(tmp_path / "k")
    r = pack([j, k], tmp_path / "out", shard_size=4, log=lambda s: None)
    got = read_manifests([tmp_path / "out"])
    assert [ex.key for ex in got] == list(jw) + list(kw)  # source order, then line order
    assert [s["packed"] for s in r.summary["sources"].values()] == [6, 4]
    with pytest.raises(ManifestError, match="a shard manifest; first_pass rewrites JSONL"):
        require_jsonl([j[1], str(tmp_path / "out")], "first_pass")  # the JSONL rewriters refuse shards by name
    # a damaged shard is an AudioError naming shard#index (training's on_error='skip' pads the row)
    (tmp_path / "out" / "shard-00001.array_record").write_bytes(b"\0" * 64)
    with pytest.raises(AudioError, match=r"shard-00001\.array_record#0: cannot read shard record"):
        example_audio(read_manifests([tmp_path / "out"])[4])


def test_killed_pack_resumes_without_duplicates_or_losses(tmp_path):
    jsonl = small_manifest(tmp_path, "train", 10)
    out = tmp_path / "out"
    r = pack([("jsonl", jsonl)], out, shard_size=3, max_shards=2, log=lambda s: None)  # "killed" after 2 shards
    assert not r.complete and r.shards_done == 2 and not (out / "shards.json").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-0000[01].*")}
    (out / "shard-00002.array_record.tmp").write_bytes(b"half a shard")  # what a kill leaves behind
    with pytest.raises(PackError, match="other sources or shard size"):
        pack([("jsonl", jsonl)], out, shard_size=4, log=lambda s: None)
    r = pack([("jsonl", jsonl)], out, shard_size=3, workers=2, log=lambda s: None)
    assert r.complete and r.shards_total == 4
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-0000[01].*")} == kept  # not rewritten
    got = read_manifests([out])  # the folder names its shards.json
    want = read_manifests([jsonl])
    assert [ex.key for ex in got] == [ex.key for ex in want]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(example_audio(a), example_audio(b))


def _bad_jsonl(d: Path, good: Path):
    lines = Path(small_manifest(d, "train", 2)).read_text().splitlines()
    broken = json.loads(lines[1])
    broken["messages"][1]["content"] = "语音转写：<|startofspeech|>!/nowhere/x.wav<|endofspeech|>"
    p = d / "m.jsonl"
    p.write_text("\n".join([lines[0], "{not json", json.dumps(broken, ensure_ascii=False)]) + "\n")
    return ("jsonl", str(p)), {f"{p}:2": "invalid manifest line", f"{p}:3": "audio file not found"}, 1


def _bad_kaldi(d: Path, good: Path):
    kd = d / "kaldi"
    kd.mkdir()
    (kd / "wav.scp").write_text(f"a {good}\nb {d / 'wav' / 'corrupt.wav'}\nc {good}\n")
    (kd / "text").write_text("a hello\nb world\nz orphan\n")
    return ("kaldi", str(kd)), {f"{kd / 'wav.scp'}:2": "cannot decode audio", f"{kd / 'wav.scp'}:3": "no transcript",
                                f"{kd / 'text'}:3": "no audio"}, 1


def _bad_lhotse(d: Path, good: Path):
    pytest.importorskip("lhotse", reason="lhotse not installed (pip install lhotse)")
    lp = d / "cuts.jsonl"
    cut = {"id": "c1", "start": 0.0, "duration": 0.3, "channel": 0, "supervisions": [],
           "recording": {"id": "r", "sources": [{"type": "file", "channels": [0], "source": str(good)}],
                         "sampling_rate": SR, "num_samples": 4800, "duration": 0.3}, "type": "MonoCut"}
    sup = [{"id": "s", "recording_id": "r", "start": 0, "duration": 0.3, "text": "x"}]
    long = dict(cut, id="c2", duration=9.0, supervisions=sup)
    ok = dict(cut, id="c3", supervisions=sup)
    lp.write_text("\n".join([json.dumps(cut), "[1, 2", json.dumps(long), json.dumps(ok)]) + "\n")
    return ("lhotse", str(lp)), {f"{lp}:1": "no transcript", f"{lp}:2": "invalid JSON",
                                 f"{lp}:3": "cut past the recording"}, 1


def _bad_hf(d: Path, good: Path):
    datasets = pytest.importorskip("datasets", reason="datasets not installed (pip install datasets)")
    ds = datasets.Dataset.from_dict({"audio": [{"bytes": b"garbage", "path": None}, {"bytes": None, "path": str(good)},
                                               {"bytes": None, "path": str(good)}],
                                     "text": ["ok", "", "fine"]}).cast_column("audio", datasets.Audio())
    ds.save_to_disk(str(d / "hf"))
    return ("hf", str(d / "hf")), {f"{d / 'hf'}:1": "cannot decode audio", f"{d / 'hf'}:2": "no transcript"}, 1


BAD = {"jsonl": _bad_jsonl, "kaldi": _bad_kaldi, "lhotse": _bad_lhotse, "hf": _bad_hf}


@pytest.mark.parametrize("fmt", list(BAD))
def test_bad_rows_are_named_by_file_and_line(fmt, tmp_path):
    d = tmp_path
    good = _wav(d / "wav", "ok.wav", 0.3, 1)
    (d / "wav" / "corrupt.wav").write_bytes(b"RIFF....WAVEnot audio at all")
    source, want, n_good = BAD[fmt](d, good)
    logged = []
    r = pack([source], d / "out", shard_size=2, log=logged.append)
    assert {s["where"]: s["reason"] for s in r.summary["skipped"]} == want
    for where, reason in want.items():  # each named once in the printed summary, with its reason
        assert sum(line.startswith(f"  skipped {where}: {reason}") for line in logged) == 1
    rows = len(want) + n_good
    assert logged[0].startswith(f"{source[1]} ({fmt}): {rows} rows, {n_good} packed")
    assert f"{len(want)} skipped" in logged[0]
    assert r.summary["records"] == len(read_manifests([d / "out"])) == n_good
    with pytest.raises(PackError) as e:
        pack([source], d / "stop", shard_size=2, on_error="stop", log=lambda s: None)
    where = str(e.value).split(": ")[0]
    assert where in want and str(e.value).startswith(f"{where}: {want[where]}: ")  # named by file:line


def test_a_row_bad_only_when_its_audio_is_read_stops_the_job(tmp_path):
    lines = Path(small_manifest(tmp_path, "train", 2)).read_text().splitlines()
    broken = json.loads(lines[1])
    broken["messages"][1]["content"] = "语音转写：<|startofspeech|>!/nowhere/x.wav<|endofspeech|>"
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join([lines[0], lines[0], json.dumps(broken, ensure_ascii=False)]) + "\n")
    with pytest.raises(PackError, match=f"^{p}:3: audio file not found"):
        pack([("jsonl", str(p))], tmp_path / "stop", shard_size=2, on_error="stop", log=lambda s: None)
    assert (tmp_path / "stop" / "shard-00000.done.json").exists()  # the shard before it stays committed


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    d = tmp_path_factory.mktemp("packed")
    durs = [0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.6, 1.9, 0.4, 0.8]
    from helpers.data import write_corpus

    manifest = write_corpus(str(d), durs)
    pack([("jsonl", manifest)], d / "shards", shard_size=3, log=lambda s: None)
    return {"manifest": manifest, "shards": str(d / "shards" / "shards.json")}


def _cfg(files, **kw):
    return DataConfig(train_files=(files,), batch_size=4, bucket_frames=(8, 16, 32), max_target_tokens=64,
                      token_multiple=16, seed=3, noise_prob=0.0, **kw)


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_shards_train_like_the_jsonl_and_resume_exactly(packed):
    tok = CharTokenizer()
    js, sh = read_manifests([packed["manifest"]]), read_manifests([packed["shards"]])
    cfg = _cfg(packed["shards"], speed_factors=(0.9, 1.0, 1.1))
    spe = make_train_data(cfg, sh, tok).steps_per_epoch
    a = _take(make_train_iterator(cfg, js, tok, CharCTC()), spe + 2)
    b = _take(make_train_iterator(cfg, sh, tok, CharCTC()), spe + 2)
    assert_batches_equal(a, b)  # same rows, same samples: the same batches as the files
    it = make_train_iterator(cfg, sh, tok, CharCTC())
    _take(it, 2)
    state = json.loads(json.dumps(it.get_state()))
    it2 = make_train_iterator(cfg, sh, tok, CharCTC())
    it2.set_state(state)
    assert_batches_equal(_take(it2, spe), b[2:])  # mid-epoch into the next one


def test_two_hosts_read_disjoint_shares_covering_the_set(packed):
    tok, sh = CharTokenizer(), read_manifests([packed["shards"]])
    cfg = _cfg(packed["shards"])
    spe = make_train_data(cfg, sh, tok).steps_per_epoch
    seen = []
    for p in (0, 1):
        rows = np.concatenate([b.example_index for b in _take(
            make_train_iterator(cfg, sh, tok, process_index=p, process_count=2), spe)])
        seen.append(set(rows[rows >= 0].tolist()))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(len(sh)))
