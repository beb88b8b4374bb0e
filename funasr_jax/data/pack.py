"""Manifests -> ArrayRecord shards of encoded audio + metadata (`data.shards` describes the format).

    python -m funasr_jax.data.pack --out DIR [--jsonl F ...] [--kaldi DIR ...] [--lhotse F ...] [--hf DIR[:split] ...]
        [--shard-size 2000] [--workers N] [--on-error skip|stop]

Sources (any number of each, packed in the order given):
- `--jsonl`: FunASR ChatML JSONL (`data.manifest`); every field of the line is kept (prompt
  fields, hotwords, subset, first pass; other fields under `extra`).
- `--kaldi`: a Kaldi data folder with `wav.scp` (`key path`; piped commands are refused) and
  `text` (`key transcript`); `utt2lang` (`key zh|en|cs`) when present.
- `--lhotse`: a Lhotse `CutSet` manifest (`.jsonl` / `.jsonl.gz`, as `CutSet.to_file` writes it),
  read as JSON lines (lhotse itself is not needed): each cut's file source, from `start` for
  `duration`, its supervisions' texts joined by spaces, their language when it is zh / en / cs.
- `--hf`: a Hugging Face `datasets` split saved with `save_to_disk` (`DIR` or `DIR:split` for a
  DatasetDict): its Audio column (read undecoded: the stored file bytes), its text column
  (text / sentence / transcription / transcript / normalized_text), `language` / `locale` if any.

Rows are dealt in order into shards of `--shard-size`; `--workers N` processes pack shards in
parallel. A shard is committed atomically (tmp + rename; its `.done.json` last), so a killed job
rerun with the same arguments keeps its finished shards and packs the rest (a rerun with other
sources or shard size is refused: `pack_plan.json` holds what was planned). Every audio file is
decoded once while packing (`audio.io.load_audio_bytes`, the training decoder), so a row that would
fail in training fails here. Every bad row is reported by source file:line (HF: folder:row+1)
with its reason, and is skipped (`--on-error skip`, counted by reason in the summary) or stops
the job (`stop`); `shards.json` lists shards with rows and hours, and one summary per source.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gzip
import hashlib
import io
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from funasr_jax.audio.frontend import num_fbank_frames
from funasr_jax.audio.io import AudioError, load_audio_bytes
from funasr_jax.data.manifest import LANGUAGES, ManifestError, audio_error_reason, parse_line
from funasr_jax.data.shards import MANIFEST_NAME, SHARDS_FORMAT, encode_record
from funasr_jax.text.prompt import DEFAULT_SYSTEM_PROMPT

__all__ = ["PackError", "PackResult", "list_rows", "main", "pack"]

DEFAULT_INSTRUCTION = "语音转写："  # the instruction of rows without one (Kaldi / Lhotse / HF)
SAMPLE_RATE = 16000
TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text")
LANGUAGE_NAMES = {"english": "en", "chinese": "zh", "mandarin": "zh", "cmn": "zh", "eng": "en"}
KINDS = ("jsonl", "kaldi", "lhotse", "hf")


class PackError(ValueError):
    """A bad row under --on-error stop, or an unusable source / output folder; names file:line."""


@dataclass
class Bad:
    source: str
    where: str
    reason: str  # a short class, counted in the summary
    detail: str

    def line(self) -> str:
        return f"{self.where}: {self.reason}: {self.detail}"


@dataclass
class PackResult:
    out: Path
    complete: bool  # False: stopped after max_shards (rerun to finish)
    shards_done: int
    shards_total: int
    summary: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ listing


def _row(source, where, audio, key, target, *, language=None, system=DEFAULT_SYSTEM_PROMPT,
         instruction=DEFAULT_INSTRUCTION, **more) -> dict:
    meta = {"key": str(key), "system": system, "instruction": instruction, "target": target,
            "language": language, "hotwords": [], "subset": None, "text_length": 0, "first_pass": None,
            "audio_end_ms": None, "source": where.rsplit(":", 1)[0], "line": int(where.rsplit(":", 1)[1])}
    meta.update(more)
    return {"src": source, "where": where, "audio": audio, "meta": meta}


def _language(v) -> str | None:
    if not isinstance(v, str):
        return None
    v = LANGUAGE_NAMES.get(v.strip().lower(), v.strip().lower())
    return v if v in LANGUAGES else None


def _list_jsonl(path: str, rows: list, bad: list) -> None:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise PackError(f"{path}: cannot open manifest ({e.strerror or e})") from None
    for n, text in enumerate(lines, 1):
        try:
            ex = parse_line(text, path, n)
        except ManifestError as e:
            bad.append(Bad(path, f"{path}:{n}", "invalid manifest line", str(e).split(": ", 1)[-1]))
            continue
        if ex is None:
            continue
        obj = json.loads(text)
        known = {"key", "messages", "speech_length", "text_length", "language", "hotwords", "subset", "first_pass",
                 "audio_end_ms"}
        extra = {k: v for k, v in obj.items() if k not in known}
        rows.append(_row(path, ex.where, {"path": ex.audio_path}, ex.key, ex.target, language=ex.language,
                         system=ex.system, instruction=ex.instruction, hotwords=list(ex.hotwords), subset=ex.subset,
                         text_length=ex.text_length, first_pass=ex.first_pass, audio_end_ms=ex.audio_end_ms,
                         speech_length=ex.speech_length, **({"extra": extra} if extra else {})))


def _kaldi_table(path: Path, bad: list, src: str) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        parts = text.strip().split(maxsplit=1)
        where = f"{path}:{n}"
        if parts[0] in out:
            bad.append(Bad(src, where, "duplicate key", f"key {parts[0]!r} repeats line {out[parts[0]][0]}"))
            continue
        out[parts[0]] = (n, parts[1].strip() if len(parts) > 1 else "")
    return out


def _list_kaldi(folder: str, rows: list, bad: list) -> None:
    d = Path(folder)
    scp, text = d / "wav.scp", d / "text"
    for f in (scp, text):
        if not f.is_file():
            raise PackError(f"{folder}: not a Kaldi data folder ({f.name} missing)")
    wavs, texts = _kaldi_table(scp, bad, folder), _kaldi_table(text, bad, folder)
    langs = _kaldi_table(d / "utt2lang", bad, folder) if (d / "utt2lang").is_file() else {}
    for key, (n, audio) in wavs.items():
        where = f"{scp}:{n}"
        if not audio:
            bad.append(Bad(folder, where, "no audio path", f"key {key!r} has no path"))
        elif audio.endswith("|"):
            bad.append(Bad(folder, where, "piped command", f"piped wav.scp commands are not supported ({audio!r})"))
        elif key not in texts:
            bad.append(Bad(folder, where, "no transcript", f"key {key!r} has no line in {text}"))
        elif not texts[key][1]:
            bad.append(Bad(folder, f"{text}:{texts[key][0]}", "no transcript", f"key {key!r} has an empty transcript"))
        else:
            path = audio if os.path.isabs(audio) else os.path.normpath(os.path.join(d.resolve(), audio))
            rows.append(_row(folder, where, {"path": path}, key, texts[key][1],
                             language=_language(langs.get(key, (0, None))[1])))
    for key, (n, _) in texts.items():
        if key not in wavs:
            bad.append(Bad(folder, f"{text}:{n}", "no audio", f"key {key!r} has no line in {scp}"))


def _list_lhotse(path: str, rows: list, bad: list) -> None:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise PackError(f"{path}: cannot open Lhotse manifest ({e.strerror or e})") from None
    base = os.path.dirname(os.path.abspath(path))
    for n, text in enumerate(lines, 1):
        where = f"{path}:{n}"
        if not text.strip():
            continue
        try:
            cut = json.loads(text)
        except json.JSONDecodeError as e:
            bad.append(Bad(path, where, "invalid JSON", f"{e.msg} at column {e.colno}"))
            continue
        rec = cut.get("recording") if isinstance(cut, dict) else None
        if not isinstance(rec, dict):
            bad.append(Bad(path, where, "not a cut", "no 'recording' (only CutSet manifests of MonoCuts are read)"))
            continue
        sources = [s for s in rec.get("sources", []) if s.get("type") == "file"]
        if len(rec.get("sources", [])) != 1 or not sources:
            bad.append(Bad(path, where, "unsupported audio source",
                           f"recording {rec.get('id')!r} needs one 'file' source, has {rec.get('sources')!r}"))
            continue
        sups = sorted(cut.get("supervisions") or [], key=lambda s: s.get("start", 0.0))
        texts = [s.get("text") for s in sups]
        if not sups or not all(isinstance(t, str) and t.strip() for t in texts):
            bad.append(Bad(path, where, "no transcript", f"cut {cut.get('id')!r} has no supervision text"))
            continue
        src = sources[0]["source"]
        if not os.path.isabs(src):
            src = os.path.join(base, src) if os.path.exists(os.path.join(base, src)) else os.path.abspath(src)
        audio = {"path": src, "offset": float(cut.get("start", 0.0)), "duration": float(cut["duration"]),
                 "channel": cut.get("channel", 0), "sr": int(rec.get("sampling_rate", 0))}
        text = " ".join(t.strip() for t in texts)
        rows.append(_row(path, where, audio, cut.get("id", f"{Path(path).name}:{n}"), text,
                         language=_language(sups[0].get("language"))))


def _hf_open(spec: str):
    import datasets

    folder, _, split = spec.partition(":") if not os.path.isdir(spec) else (spec, "", "")
    ds = datasets.load_from_disk(folder)
    if isinstance(ds, datasets.DatasetDict):
        if not split and len(ds) == 1:
            split = next(iter(ds))
        if split not in ds:
            raise PackError(f"{spec}: a DatasetDict with splits {sorted(ds)}; name one as {folder}:SPLIT")
        ds = ds[split]
    audio_cols = [c for c, f in ds.features.items() if isinstance(f, datasets.Audio)]
    if not audio_cols:
        raise PackError(f"{spec}: no Audio column (columns: {sorted(ds.features)})")
    ds = ds.cast_column(audio_cols[0], datasets.Audio(decode=False))
    return ds, audio_cols[0], folder + (f"/{split}" if split else "")


_hf_cache: dict = {}


def _list_hf(spec: str, rows: list, bad: list) -> None:
    try:
        ds, audio_col, label = _hf_open(spec)
    except ImportError:
        raise PackError(f"{spec}: reading Hugging Face datasets needs the `datasets` package") from None
    text_col = next((c for c in TEXT_COLUMNS if c in ds.column_names), None)
    if text_col is None:
        raise PackError(f"{spec}: no text column (one of {TEXT_COLUMNS}; columns: {ds.column_names})")
    lang_col = next((c for c in ("language", "locale") if c in ds.column_names), None)
    key_col = next((c for c in ("id", "key", "utt_id") if c in ds.column_names), None)
    texts = ds[text_col]
    langs = ds[lang_col] if lang_col else [None] * len(texts)
    keys = ds[key_col] if key_col else [f"{Path(label).name}-{i}" for i in range(len(texts))]
    for i, (t, lang, key) in enumerate(zip(texts, langs, keys)):
        where = f"{label}:{i + 1}"
        if not isinstance(t, str) or not t.strip():
            bad.append(Bad(spec, where, "no transcript", f"row {i}: column {text_col!r} is {t!r}"))
            continue
        rows.append(_row(spec, where, {"hf": spec, "row": i, "column": audio_col}, key, t.strip(),
                         language=_language(lang)))


def list_rows(sources: list[tuple[str, str]]) -> tuple[list[dict], list[Bad]]:
    """(rows in source order, rows bad before any audio is read) of [(kind, path)], kind in KINDS."""
    rows: list[dict] = []
    bad: list[Bad] = []
    for kind, path in sources:
        if kind not in KINDS:
            raise PackError(f"unknown source kind {kind!r} (one of {KINDS})")
        {"jsonl": _list_jsonl, "kaldi": _list_kaldi, "lhotse": _list_lhotse, "hf": _list_hf}[kind](path, rows, bad)
    return rows, bad


# ------------------------------------------------------------------------------------------ audio


def _audio_bytes(spec: dict) -> tuple[bytes, str]:
    """(encoded audio of the row, its name for messages)."""
    if "hf" in spec:
        if spec["hf"] not in _hf_cache:
            _hf_cache[spec["hf"]] = _hf_open(spec["hf"])[0]
        item = _hf_cache[spec["hf"]][spec["row"]][spec["column"]]
        if item.get("bytes"):
            return item["bytes"], f"{spec['hf']}:row {spec['row']}"
        return _read_file(item["path"]), item["path"]
    path = spec["path"]
    data = _read_file(path)
    if "offset" not in spec:
        return data, path
    info = sf.info(io.BytesIO(data))
    start, frames = int(round(spec["offset"] * info.samplerate)), int(round(spec["duration"] * info.samplerate))
    if start == 0 and frames == info.frames and spec.get("channel") in (0, None, list(range(info.channels))) \
            and info.channels == 1:
        return data, path  # the whole file: its own bytes
    with sf.SoundFile(io.BytesIO(data)) as f:
        f.seek(start)
        x = f.read(frames, dtype="int16" if info.subtype == "PCM_16" else "float32", always_2d=True)
    ch = spec.get("channel")
    x = x[:, ch] if isinstance(ch, int) else (x[:, ch].mean(axis=1) if isinstance(ch, list) else x)
    if len(x) < frames:
        raise AudioError(f"{path}: cut from {spec['offset']} s for {spec['duration']} s runs past the "
                         f"{info.frames / info.samplerate:.3f} s recording")
    buf = io.BytesIO()
    if x.dtype == np.int16:
        sf.write(buf, x, info.samplerate, format="FLAC", subtype="PCM_16")
    else:
        sf.write(buf, x, info.samplerate, format="WAV", subtype="FLOAT")
    return buf.getvalue(), f"{path}@{spec['offset']}+{spec['duration']}"


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise AudioError(f"{path}: audio file not found") from None
    except OSError as e:
        raise AudioError(f"{path}: cannot read audio file ({e.strerror or e})") from None


# ------------------------------------------------------------------------------------------ shards


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def pack_shard(out: str, index: int, rows: list[dict], on_error: str) -> dict:
    """Packs `rows` into shard `index` of `out` (tmp + rename; `.done.json` last); returns its done record.
    Raises PackError naming file:line at a bad row under on_error='stop'."""
    from array_record.python.array_record_module import ArrayRecordWriter

    name = _shard_name(index)
    rec_path, meta_path = Path(out) / f"{name}.array_record", Path(out) / f"{name}.meta.jsonl"
    tmp_rec, tmp_meta = Path(f"{rec_path}.tmp"), Path(f"{meta_path}.tmp")
    writer = ArrayRecordWriter(str(tmp_rec), "group_size:1,uncompressed")  # random access: one record per chunk
    metas, bad, per_source = [], [], {}
    nbytes = 0
    try:
        for row in rows:
            try:
                data, name_ = _audio_bytes(row["audio"])
                wave = load_audio_bytes(data, name_, SAMPLE_RATE)
            except (AudioError, RuntimeError, sf.LibsndfileError) as e:
                b = Bad(row["src"], row["where"], audio_error_reason(str(e), "unreadable audio"), str(e))
                if on_error == "stop":
                    raise PackError(b.line()) from None
                bad.append(b)
                continue
            meta = dict(row["meta"])
            n = len(wave)
            if meta.get("audio_end_ms") is not None:
                n = min(n, int(round(meta["audio_end_ms"] * SAMPLE_RATE / 1000.0)))
            meta.setdefault("speech_length", num_fbank_frames(n))
            meta["seconds"] = round(n / SAMPLE_RATE, 4)
            record = encode_record(meta, data)
            writer.write(record)
            nbytes += len(record)
            metas.append(json.dumps(meta, ensure_ascii=False, sort_keys=True))
            s = per_source.setdefault(row["src"], {"packed": 0, "seconds": 0.0})
            s["packed"] += 1
            s["seconds"] += meta["seconds"]
    finally:
        writer.close()
    tmp_meta.write_text("".join(m + "\n" for m in metas), encoding="utf-8")
    os.replace(tmp_rec, rec_path)
    os.replace(tmp_meta, meta_path)
    done = {"path": rec_path.name, "meta": meta_path.name, "records": len(metas), "bytes": nbytes,
            "seconds": round(sum(s["seconds"] for s in per_source.values()), 4), "sources": per_source,
            "skipped": [b.__dict__ for b in bad]}
    tmp_done = Path(out) / f"{name}.done.json.tmp"
    tmp_done.write_text(json.dumps(done, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp_done, Path(out) / f"{name}.done.json")
    return done


def _fingerprint(rows: list[dict], shard_size: int) -> str:
    h = hashlib.sha256(str(shard_size).encode())
    for r in rows:
        h.update(f"{r['where']}\t{r['meta']['key']}\n".encode())
    return h.hexdigest()


def pack(sources: list[tuple[str, str]], out: str | os.PathLike, *, shard_size: int = 2000, workers: int = 0,
         on_error: str = "skip", max_shards: int | None = None, log=print) -> PackResult:
    """Packs `sources` ([(kind, path)]) into shards under `out` (see the module docstring).

    max_shards: pack at most this many shards in this call (the rest on a later call); shards.json
    is written once every shard is done. Raises PackError (bad row under 'stop', unusable source).
    """
    if on_error not in ("skip", "stop"):
        raise ValueError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    sources = [(k, os.fspath(p)) for k, p in sources]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, bad = list_rows(sources)
    if bad and on_error == "stop":
        raise PackError(bad[0].line())
    chunks = [rows[i:i + shard_size] for i in range(0, len(rows), shard_size)]
    plan = {"sources": [[k, str(p)] for k, p in sources], "shard_size": shard_size, "rows": len(rows),
            "shards": len(chunks), "fingerprint": _fingerprint(rows, shard_size)}
    plan_path = out / "pack_plan.json"
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        if old != plan:
            raise PackError(f"{out}: holds a pack of other sources or shard size ({plan_path}); "
                            "use a new folder, or delete that one")
    else:
        tmp = out / "pack_plan.json.tmp"
        tmp.write_text(json.dumps(plan, ensure_ascii=False, indent=1))
        os.replace(tmp, plan_path)
    todo = [i for i in range(len(chunks)) if not (out / f"{_shard_name(i)}.done.json").exists()]
    if len(todo) < len(chunks):
        log(f"pack: {len(chunks) - len(todo)} of {len(chunks)} shards already done in {out}; packing the rest")
    if max_shards is not None:
        todo = todo[:max_shards]
    if workers > 0 and len(todo) > 1:
        with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futs = [pool.submit(pack_shard, str(out), i, chunks[i], on_error) for i in todo]
            for f in cf.as_completed(futs):
                f.result()  # a PackError under 'stop' surfaces here; finished shards stay committed
    else:
        for i in todo:
            pack_shard(str(out), i, chunks[i], on_error)
    done_n = sum((out / f"{_shard_name(i)}.done.json").exists() for i in range(len(chunks)))
    if done_n < len(chunks):
        return PackResult(out, False, done_n, len(chunks))
    summary = _write_manifest(out, sources, rows, bad, len(chunks))
    for line in summary["lines"]:
        log(line)
    return PackResult(out, True, done_n, len(chunks), summary)


def _write_manifest(out: Path, sources, rows, bad: list[Bad], n_shards: int) -> dict:
    dones = [json.loads((out / f"{_shard_name(i)}.done.json").read_text()) for i in range(n_shards)]
    per: dict[str, dict] = {str(p): {"kind": k, "rows": 0, "packed": 0, "seconds": 0.0, "skipped": {}}
                            for k, p in sources}
    for r in rows:
        per[r["src"]]["rows"] += 1
    skipped = list(bad) + [Bad(**b) for d in dones for b in d["skipped"]]
    for b in bad:
        per[b.source]["rows"] += 1
    for b in skipped:
        per[b.source]["skipped"][b.reason] = per[b.source]["skipped"].get(b.reason, 0) + 1
    for d in dones:
        for src, s in d["sources"].items():
            per[src]["packed"] += s["packed"]
            per[src]["seconds"] += s["seconds"]
    lines = []
    for src, s in per.items():
        s["hours"] = round(s["seconds"] / 3600, 4)
        why = ", ".join(f"{r}: {n}" for r, n in sorted(s["skipped"].items(), key=lambda kv: -kv[1]))
        n_skip = sum(s["skipped"].values())
        lines.append(f"{src} ({s['kind']}): {s['rows']} rows, {s['packed']} packed ({s['hours']:.3f} h), "
                     f"{n_skip} skipped" + (f" ({why})" if why else ""))
    for b in skipped:
        lines.append(f"  skipped {b.line()}")
    manifest = {"format": SHARDS_FORMAT,
                "records": sum(d["records"] for d in dones),
                "hours": round(sum(d["seconds"] for d in dones) / 3600, 4),
                "bytes": sum(d["bytes"] for d in dones),
                "shards": [{k: d[k] for k in ("path", "meta", "records", "seconds", "bytes")} for d in dones],
                "sources": per,
                "skipped": [b.__dict__ for b in skipped]}
    tmp = out / f"{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, out / MANIFEST_NAME)
    return {"lines": lines, **manifest}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m funasr_jax.data.pack", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder of the shards and shards.json")
    for k, what in (("jsonl", "FunASR ChatML JSONL file"), ("kaldi", "Kaldi data folder (wav.scp + text)"),
                    ("lhotse", "Lhotse CutSet manifest (.jsonl[.gz])"), ("hf", "datasets save_to_disk folder[:split]")):
        ap.add_argument(f"--{k}", action="append", default=[], metavar="PATH", help=what + " (repeatable)")
    ap.add_argument("--shard-size", type=int, default=2000, help="rows per shard")
    ap.add_argument("--workers", type=int, default=0, help="processes packing shards (0: this one)")
    ap.add_argument("--on-error", choices=("skip", "stop"), default="skip",
                    help="a bad row: report it by file:line and skip it, or stop the job")
    ap.add_argument("--max-shards", type=int, default=None, help="pack at most N shards now (rerun for the rest)")
    a = ap.parse_args(argv)
    order = [(k, p) for k in KINDS for p in getattr(a, k)]
    if not order:
        ap.error("give at least one source (--jsonl / --kaldi / --lhotse / --hf)")
    t0 = time.perf_counter()
    try:
        r = pack(order, a.out, shard_size=a.shard_size, workers=a.workers, on_error=a.on_error,
                 max_shards=a.max_shards)
    except PackError as e:
        print(f"pack: error: {e}", file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0
    if not r.complete:
        print(f"pack: {r.shards_done} of {r.shards_total} shards done in {dt:.1f} s; rerun to pack the rest")
        return 0
    print(f"pack: {r.summary['records']} rows, {r.summary['hours']:.3f} h in {r.shards_total} shards "
          f"({r.summary['bytes'] / 2**20:.1f} MiB) -> {r.out / MANIFEST_NAME} in {dt:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
