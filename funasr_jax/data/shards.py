"""Sharded training data: ArrayRecord shards of encoded audio + each row's metadata.

Written by `python -m funasr_jax.data.pack` (`data.pack`); read wherever a manifest is read
(`manifest.read_manifests` hands a shard manifest here), so `data.train_files` / `dev_files` /
`test_files` may name a shard manifest (`shards.json`, or the folder holding it) next to JSONL files.

A pack folder::

    shards.json                     the shard manifest (SHARDS_FORMAT): shards, rows, hours, per-source summary
    shard-00000.array_record        one record per row: RECORD_MAGIC, u32 n, n bytes of metadata JSON, audio bytes
    shard-00000.meta.jsonl          the same metadata, one line per record (planning reads these, never the audio)
    shard-00000.done.json           written last (tmp + rename): the shard is complete; `pack` skips it on a rerun

The audio bytes are an encoded file (the source file's own bytes where the row is a whole file:
ogg / flac / wav as it was; a FLAC or WAV slice of a longer recording otherwise), decoded by
`audio.io.load_audio_bytes` — the decoder of the JSONL + file path — so a row reads the same
samples from a shard as from its file. The metadata carries every `Example` field (the system
prompt, instruction, transcript, language, hotwords, subset, first pass, `speech_length` in 10 ms
fbank frames for bucketing, `seconds`) and the row's origin (`source`, `line`: the file:line errors name).

Rows read from shards are `Example`s whose `shard_ref` is (array_record path, record index) and
whose `audio_path` reads `<shard>#<index>`; `manifest.example_audio` decodes them. Readers are
opened lazily, one per shard file per process (grain worker processes open their own).
"""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path

from funasr_jax.data.manifest import Example, ManifestError

__all__ = ["RECORD_MAGIC", "SHARDS_FORMAT", "decode_record", "encode_record", "example_from_meta",
           "is_shard_manifest", "read_record", "read_shard_examples", "shard_manifest_path"]

SHARDS_FORMAT = "funasr-jax-shards/1"
RECORD_MAGIC = b"FJS1"
MANIFEST_NAME = "shards.json"


def encode_record(meta: dict, audio: bytes) -> bytes:
    """One shard record: RECORD_MAGIC, the metadata JSON's length (u32 little-endian), the JSON, the audio bytes."""
    head = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return RECORD_MAGIC + struct.pack("<I", len(head)) + head + bytes(audio)


def decode_record(data: bytes, name: str = "record") -> tuple[dict, bytes]:
    """(metadata, audio bytes) of one record; ManifestError naming `name` when it is not one."""
    if len(data) < 8 or data[:4] != RECORD_MAGIC:
        raise ManifestError(f"{name}: not a funasr-jax shard record (magic {data[:4]!r})")
    (n,) = struct.unpack("<I", data[4:8])
    if 8 + n > len(data):
        raise ManifestError(f"{name}: truncated shard record ({len(data)} bytes, metadata says {8 + n}+)")
    return json.loads(data[8:8 + n].decode("utf-8")), data[8 + n:]


def shard_manifest_path(path: str | os.PathLike) -> Path | None:
    """The shards.json that `path` names (the file itself, or a folder holding one); None otherwise."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
        return p if p.is_file() else None
    if p.suffix != ".json" or not p.is_file():
        return None
    try:
        with open(p, encoding="utf-8") as f:
            head = f.read(4096)
    except OSError:
        return None
    return p if f'"format": "{SHARDS_FORMAT}"' in head or f'"format":"{SHARDS_FORMAT}"' in head else None


def is_shard_manifest(path: str | os.PathLike) -> bool:
    return shard_manifest_path(path) is not None


def example_from_meta(meta: dict, shard: str, index: int) -> Example:
    """The `Example` of record `index` of `shard` (an array_record path) from its metadata."""
    return Example(
        key=str(meta["key"]), audio_path=f"{shard}#{index}", system=meta["system"],
        instruction=meta["instruction"], target=meta.get("target"), language=meta.get("language"),
        hotwords=tuple(meta.get("hotwords") or ()), subset=meta.get("subset"),
        speech_length=int(meta["speech_length"]), source=str(meta.get("source", shard)),
        line=int(meta.get("line", index + 1)), text_length=int(meta.get("text_length", 0)),
        first_pass=meta.get("first_pass"), audio_end_ms=meta.get("audio_end_ms"),
        shard_ref=(shard, int(index)))


def load_shard_manifest(path: str | os.PathLike) -> tuple[Path, dict]:
    """(the shards.json path, its contents); ManifestError naming the file when unusable."""
    p = shard_manifest_path(path)
    if p is None:
        raise ManifestError(f"{path}: not a shard manifest ({MANIFEST_NAME} with format {SHARDS_FORMAT})")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"{p}: cannot read shard manifest ({e})") from None
    if obj.get("format") != SHARDS_FORMAT or not isinstance(obj.get("shards"), list):
        raise ManifestError(f"{p}: not a shard manifest (format {obj.get('format')!r}, expected {SHARDS_FORMAT})")
    return p, obj


def read_shard_examples(path: str | os.PathLike) -> list[Example]:
    """Every row of a shard manifest as `Example`s, in shard then record order, from the shards'
    `.meta.jsonl` files (no audio is read). ManifestError names a missing / short shard."""
    p, obj = load_shard_manifest(path)
    out: list[Example] = []
    for sh in obj["shards"]:
        rec, meta_file = p.parent / sh["path"], p.parent / sh["meta"]
        if not rec.is_file():
            raise ManifestError(f"{p}: shard {sh['path']} is missing")
        try:
            lines = meta_file.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ManifestError(f"{p}: cannot read {sh['meta']} ({e.strerror or e})") from None
        if len(lines) != int(sh["records"]):
            raise ManifestError(f"{meta_file}: {len(lines)} lines, the shard manifest says {sh['records']} records")
        out.extend(example_from_meta(json.loads(t), str(rec), i) for i, t in enumerate(lines))
    return out


_readers: dict[tuple[int, str], object] = {}
_lock = threading.Lock()


def _reader(shard: str):
    key = (os.getpid(), shard)  # a forked grain worker opens its own
    r = _readers.get(key)
    if r is None:
        import grain

        with _lock:
            r = _readers.get(key)
            if r is None:
                r = grain.sources.ArrayRecordDataSource([shard])
                _readers[key] = r
    return r


def read_record(shard: str, index: int) -> tuple[dict, bytes]:
    """(metadata, audio bytes) of record `index` of the array_record file `shard`."""
    if not os.path.isfile(shard):
        raise FileNotFoundError(f"{shard}: shard file not found")
    return decode_record(_reader(shard)[int(index)], f"{shard}#{index}")
