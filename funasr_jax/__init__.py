"""funasr-jax: FunAudio-ASR in JAX/Flax (see README.md and ARCHITECTURE.md)."""

import importlib.util as _importlib_util
from pathlib import Path as _Path


def _check_kernels_package() -> None:
    """Fail clearly when another top-level `kernels` package shadows ours.

    Hugging Face's `kernels` distribution (a hard dependency of transformers >= 5.25) installs a
    package of the same name; whichever comes first on `sys.path` wins, and the loser breaks with
    an unrelated-looking ImportError. We raise one that names the cause and the fix instead.
    """
    ours = _Path(__file__).resolve().parent.parent / "kernels" / "__init__.py"
    spec = _importlib_util.find_spec("kernels")
    found = _Path(spec.origin).resolve() if spec is not None and spec.origin else None
    if found != ours:
        raise ImportError(
            f"funasr-jax needs its own `kernels` package ({ours.parent}), but `import kernels` "
            f"resolves to {found or 'nothing'}. Hugging Face's `kernels` distribution (pulled in by "
            "transformers >= 5.25) installs a package of the same name: run `pip uninstall kernels` "
            "and keep transformers < 5.25 in this environment (see README, 'Installing')."
        )


_check_kernels_package()
