"""Command line: `python -m funasr_jax.first_pass` (the work is in `funasr_jax.infer.first_pass`)."""

import sys

from funasr_jax.infer.first_pass import main

if __name__ == "__main__":
    sys.exit(main())
