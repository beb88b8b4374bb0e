"""Checkpoint digests (`funasr_jax.io.digest`): a sha256 per file written after the save; a missing,
truncated or altered file is refused by name; a checkpoint without a digest loads with a warning."""

from __future__ import annotations

import json
import re
import warnings

import jax
import numpy as np
import pytest

from funasr_jax.io.checkpoint import CheckpointError, load_model, save_params
from funasr_jax.io.digest import DIGEST_FILE, DigestError, file_sha256, verify_digest, write_digest
from funasr_jax.models.config import tiny_config
from funasr_jax.models.funasr import init_params
from sharding.paths import flatten


def _tree(tmp_path):
    root = tmp_path / "ck"
    (root / "params" / "d").mkdir(parents=True)
    (root / "params" / "d" / "a.bin").write_bytes(bytes(range(256)) * 40)
    (root / "params" / "meta").write_text("{}")
    (root / "opt_state").mkdir()
    (root / "opt_state" / "b.bin").write_bytes(b"x" * 1000)
    return root


def test_digest_lists_every_file_with_hashlib_sums(tmp_path):
    import hashlib

    root = _tree(tmp_path)
    write_digest(root, extra={"step": 7})
    doc = json.loads((root / DIGEST_FILE).read_text())
    assert doc["step"] == 7 and sorted(doc["files"]) == ["opt_state/b.bin", "params/d/a.bin", "params/meta"]
    for name, entry in doc["files"].items():
        data = (root / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert file_sha256(root / "params/meta") == hashlib.sha256(b"{}").hexdigest()
    assert verify_digest(root) is True and verify_digest(root, under=("params",)) is True
    assert not list(root.glob(DIGEST_FILE + ".tmp*"))  # written by rename


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_file_is_named(tmp_path, damage):
    root = _tree(tmp_path)
    write_digest(root)
    f = root / "params" / "d" / "a.bin"
    data = bytearray(f.read_bytes())
    if damage == "flip":
        data[5000] ^= 0x01
        f.write_bytes(bytes(data))
        why = "sha256 differs"
    elif damage == "truncate":
        f.write_bytes(bytes(data[:4096]))
        why = "4096 bytes, the digest says 10240"
    else:
        f.unlink()
        why = "missing"
    with pytest.raises(DigestError, match=re.escape(f"{f}: {why}")):
        verify_digest(root)
    with pytest.raises(DigestError, match="a.bin"):
        verify_digest(root, under=("params",))
    assert verify_digest(root, under=("opt_state",)) is True  # only the files asked for are read


def test_no_digest_is_unverified_and_a_bad_digest_is_an_error(tmp_path):
    root = _tree(tmp_path)
    assert verify_digest(root) is None
    (root / DIGEST_FILE).write_text("{not json")
    with pytest.raises(DigestError, match="unreadable digest"):
        verify_digest(root)


def test_load_model_verifies_saved_params(tmp_path):
    cfg = tiny_config(vocab_size=64, ctc_vocab_size=64)
    params = jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(3)))
    d = tmp_path / "model"
    save_params(d, params, cfg)
    doc = json.loads((d / DIGEST_FILE).read_text())
    assert doc["files"] and all(n.startswith("params/") for n in doc["files"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a verified checkpoint loads without a warning
        loaded = load_model(d).params
    assert all(np.array_equal(a, flatten(loaded)[k]) for k, a in flatten(params).items())

    biggest = max((d / n for n in doc["files"]), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=re.escape(f"{biggest}: sha256 differs")):
        load_model(d)

    (d / DIGEST_FILE).unlink()  # an older checkpoint (no digest): loads, with one warning
    save_params(d, params, cfg)
    (d / DIGEST_FILE).unlink()
    with pytest.warns(UserWarning, match=f"no {DIGEST_FILE}"):
        load_model(d)
