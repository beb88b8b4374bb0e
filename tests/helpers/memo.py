"""Session fixtures that survive pytest-xdist's teardowns.

A worker that runs out of queued tests tears its session fixtures down, and rebuilds them when
more tests of the same module arrive; for fixtures that launch minute-long subprocess runs that
doubles their cost. `once_per_session` runs `build` the first time and keeps its JSON result (or
its output folder) under the session's base temporary directory, which a rebuild reads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


def once_per_session(tmp_path_factory, name: str, build: Callable[[Path], dict]) -> dict:
    """`build(folder)` -> JSON-able dict, run at most once per worker session; `folder` is the
    fixed folder it may write into (kept for the session, so results that point at files there
    stay valid)."""
    folder = Path(tmp_path_factory.getbasetemp()) / f"once-{name}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    result = build(folder)
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(done)
    return result
