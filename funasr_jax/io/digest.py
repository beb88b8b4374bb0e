"""Checkpoint digests: a sha256 of every file of a saved checkpoint, written after the save, checked on load.

A digest is `digest.json` in a checkpoint directory (our model checkpoint: next to `params/`; a
trainer's `checkpoints/<step>/`: next to `params/`, `opt_state/`, ...):

    {"format": "funasr-jax-digest", "version": 1, "algorithm": "sha256",
     "files": {"<path relative to the directory>": {"bytes": <size in bytes>, "sha256": "<hex>"}, ...},
     ...extra fields (e.g. "step")}

It is written once the checkpoint is complete (for orbax: after the save is finalized), atomically
(a temporary file, fsync, rename), so a digest's presence means the files it lists were all there.
`verify_digest` re-reads the listed files (optionally only those under some sub-directories, e.g.
`params/`) and raises `DigestError` naming the first file that is missing, has another size, or
another sha256. A directory without a digest (checkpoints written before digests, or exported
elsewhere) verifies as "unverified" (`None`): callers load it with a warning.

Cost: one sequential read of every listed file (sha256 runs at roughly 0.5-2 GB/s per core;
files are hashed on a few threads, hashlib releases the GIL).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from funasr_jax.io.names import CheckpointError

DIGEST_FILE = "digest.json"
FORMAT = "funasr-jax-digest"
_CHUNK = 8 << 20  # bytes read per call
_THREADS = 4


class DigestError(CheckpointError):
    """A checkpoint's files do not match its digest (or the digest is unreadable); names the file."""


def file_sha256(path) -> str:
    """Hex sha256 of one file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path, under=()) -> list[str]:
    out = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel == DIGEST_FILE or rel.startswith(DIGEST_FILE + "."):
                continue
            if under and not any(rel.startswith(u.rstrip("/") + "/") for u in under):
                continue
            out.append(rel)
    return sorted(out)


def write_digest(root, under=(), *, extra: dict | None = None) -> Path:
    """Hash every file under `root` (recursively; only below the sub-directories `under` if given)
    and write `root/digest.json` atomically. Call it only once those files are all written.
    Returns the digest's path.
    OSError (disk full, read-only, ...) propagates; no partial digest is left behind."""
    root = Path(root)
    names = _files(root, under)
    with ThreadPoolExecutor(_THREADS) as pool:
        sums = list(pool.map(lambda n: file_sha256(root / n), names))
    files = {n: {"bytes": (root / n).stat().st_size, "sha256": s} for n, s in zip(names, sums)}
    doc = {"format": FORMAT, "version": 1, "algorithm": "sha256", "files": files, **(extra or {})}
    final = root / DIGEST_FILE
    tmp = root / (DIGEST_FILE + f".tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(root)
    return final


def has_digest(root) -> bool:
    return (Path(root) / DIGEST_FILE).is_file()


def read_digest(root) -> dict | None:
    """The parsed digest of `root`, or None when it has none; DigestError when it is unreadable."""
    f = Path(root) / DIGEST_FILE
    if not f.is_file():
        return None
    try:
        doc = json.loads(f.read_text())
        if doc.get("format") != FORMAT or not isinstance(doc.get("files"), dict):
            raise ValueError(f"not a {FORMAT} file")
    except (OSError, ValueError) as e:
        raise DigestError(f"{f}: unreadable digest ({type(e).__name__}: {e})") from None
    return doc


def verify_digest(root, under=()) -> bool | None:
    """Check the files of `root` against its digest. under: only files below these sub-directories
    (e.g. ("params",)); every listed file there must still be there with its size and sha256.
    -> True (verified) or None (no digest: unverified). Raises DigestError naming the first bad file."""
    root = Path(root)
    doc = read_digest(root)
    if doc is None:
        return None
    listed = {n: v for n, v in doc["files"].items()
              if not under or any(n.startswith(u.rstrip("/") + "/") for u in under)}
    if under and not listed:
        raise DigestError(f"{root / DIGEST_FILE}: lists no file under {', '.join(under)}")
    for name, want in sorted(listed.items()):  # cheap checks first: presence, size
        p = root / name
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            raise DigestError(f"{p}: missing (listed in {root / DIGEST_FILE})") from None
        except OSError as e:
            raise DigestError(f"{p}: unreadable ({e.strerror})") from None
        if size != want.get("bytes"):
            raise DigestError(f"{p}: {size} bytes, the digest says {want.get('bytes')} (truncated or rewritten)")
    names = sorted(listed)

    def check(name):
        try:
            return name, file_sha256(root / name)
        except OSError as e:
            return name, f"unreadable ({e.strerror})"

    with ThreadPoolExecutor(_THREADS) as pool:
        for name, got in pool.map(check, names):
            if got != listed[name].get("sha256"):
                why = got if got.startswith("unreadable") else "sha256 differs from the digest (corrupted)"
                raise DigestError(f"{root / name}: {why}")
    return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
