"""Command line: `python -m funasr_jax.evaluate` (the work is in `funasr_jax.infer.evaluate`)."""

import sys

from funasr_jax.infer.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
