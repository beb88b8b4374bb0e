"""The project stands alone: what its README, docs and docstrings point a reader at exists in the
repository — no issue numbers from the tracker, no documents that only the developers have, no
repository path that has moved or gone."""

from __future__ import annotations

import ast
import functools
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = ("funasr_jax", "train", "kernels", "sharding", "configs", "tools", "tests", "docs", "data")
ISSUE = re.compile(r"\bissues? #?\d+", re.IGNORECASE)
MD = re.compile(r"(?<![\w/.-])([\w./-]+\.md)\b")
REPO_PATH = re.compile(r"(?<![\w/.~-])((?:%s)/[\w./-]*[\w/])" % "|".join(TOP))


def prose(path: Path) -> str:
    """What a reader reads in `path`: the whole of a Markdown file; a Python file's docstrings and
    comments (its other string literals are data — metric tags, file names it writes), each kept at
    its line so that positions stay right."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return text
    lines = [""] * (text.count("\n") + 1)
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            doc = body[0].value
            for i in range(doc.lineno - 1, doc.end_lineno):
                lines[i] = text.splitlines()[i]
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            lines[tok.start[0] - 1] += " " + tok.string
    return "\n".join(lines)


@functools.cache
def texts() -> dict[Path, str]:
    """The prose of README, ARCHITECTURE, docs/*.md and every Python file of the project (code and tests)."""
    files = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for top in TOP:
        if top != "data":
            files += sorted((ROOT / top).rglob("*.py"))
    return {f: prose(f) for f in files if f.is_file()}


def _where(f: Path, text: str, pos: int) -> str:
    return f"{f.relative_to(ROOT)}:{text.count(chr(10), 0, pos) + 1}"


def test_no_issue_numbers():
    this = Path(__file__).resolve()
    bad = [f"{_where(f, t, m.start())}: {m.group(0)!r}" for f, t in texts().items() if f != this
           for m in ISSUE.finditer(t)]
    assert not bad, "issue numbers mean nothing to a user of the repository:\n" + "\n".join(bad)


def written_names(path: Path) -> set[str]:
    """The string literals of a Python file's code (the names of files it writes, among others)."""
    if path.suffix != ".py":
        return set()
    return {n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and len(n.value) < 200}


def test_named_markdown_files_exist():
    present = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts and ".git" not in p.parts}
    bad = []
    for f, t in texts().items():
        outputs = written_names(f)  # a report the code itself writes is named, not missing
        for m in MD.finditer(t):
            name = m.group(1)
            if name in outputs:
                continue
            if not ((ROOT / name).exists() or (f.parent / name).exists() or Path(name).name in present):
                bad.append(f"{_where(f, t, m.start())}: {name}")
    assert not bad, "documents named but not in the repository:\n" + "\n".join(bad)


def test_named_repository_paths_exist():
    bad = []
    for f, t in texts().items():
        for m in REPO_PATH.finditer(t):
            path = m.group(1).split("::")[0].rstrip(".")
            if any(c in path for c in "<*{") or re.search(r"[A-Z]{3,}", path):
                continue  # a pattern or a placeholder, not a file
            if not (ROOT / path).exists():
                bad.append(f"{_where(f, t, m.start())}: {path}")
    assert not bad, "paths named but not in the repository:\n" + "\n".join(bad)
