"""`import funasr_jax.api as fa`: the scripting API (defined in `funasr_jax.infer.api`)."""

from funasr_jax.infer.api import *  # noqa: F401,F403
from funasr_jax.infer.api import __all__  # noqa: F401
