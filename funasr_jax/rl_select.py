"""Command line: `python -m funasr_jax.rl_select` (the work is in `funasr_jax.infer.rl_select`)."""

import sys

from funasr_jax.infer.rl_select import main

if __name__ == "__main__":
    sys.exit(main())
