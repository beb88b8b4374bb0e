"""A foreign top-level `kernels` package (Hugging Face's) must stop `import funasr_jax` clearly."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_foreign_kernels_package_is_named_in_the_error(tmp_path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("CUDAProperties = object\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", "import funasr_jax"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "ImportError" in r.stderr and str(tmp_path / "kernels") in r.stderr
    assert "pip uninstall kernels" in r.stderr


def test_our_kernels_package_passes_the_check():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", "import funasr_jax, kernels; print(kernels.__file__)"],
                       cwd=ROOT.parent, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).resolve() == ROOT / "kernels" / "__init__.py"
