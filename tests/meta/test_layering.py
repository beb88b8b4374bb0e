"""The layers read down the stack (ARCHITECTURE.md): every import in the package sources, top-level
or inside a function, is checked with `ast`, so a hidden upward import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("kernels", "sharding", "funasr_jax", "train", "configs")
# What each package must never import (ARCHITECTURE.md, "Layers").
FORBIDDEN = {
    "kernels": ("funasr_jax", "train", "configs"),
    "sharding": ("funasr_jax", "train", "configs"),
    "funasr_jax": ("train", "configs"),
    "train": ("configs",),
}


def _imports(path: Path):
    """(line, imported module, is function-local, source line) for every import in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    lines = path.read_text().splitlines()
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    local.add(id(sub))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: inside the same package
                names = [path.parent.name]
            else:
                names = [node.module or ""]
        else:
            continue
        for n in names:
            yield node.lineno, n, id(node) in local, lines[node.lineno - 1]


def _sources(pkg: str):
    return sorted((REPO / pkg).rglob("*.py"))


def test_the_checker_sees_function_local_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef g():\n    from train.loop import train  # hidden\n    return train\n")
    found = list(_imports(f))
    assert (4, "train.loop", True, "    from train.loop import train  # hidden") in found
    assert (1, "os", False, "import os") in found


@pytest.mark.parametrize("pkg", sorted(FORBIDDEN))
def test_no_import_goes_up_the_stack(pkg):
    bad = []
    for path in _sources(pkg):
        for line, name, is_local, _ in _imports(path):
            top = name.split(".")[0]
            if top in FORBIDDEN[pkg]:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {name}" + (" (inside a function)" if is_local else ""))
    assert not bad, "imports that go up the stack:\n" + "\n".join(bad)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_function_local_imports_of_the_project_say_why(pkg):
    """A project module imported inside a function must say why on that line (a real cycle, or
    a heavy optional dependency) — otherwise it belongs at the top of the file."""
    bad = []
    for path in _sources(pkg):
        for line, name, is_local, text in _imports(path):
            if is_local and name.split(".")[0] in PACKAGES and "#" not in text:
                bad.append(f"{path.relative_to(REPO)}:{line}: {text.strip()}")
    assert not bad, "function-local project imports without a reason:\n" + "\n".join(bad)
