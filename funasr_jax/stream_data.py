"""Command line: `python -m funasr_jax.stream_data` (the work is in `funasr_jax.infer.stream_data`)."""

import sys

from funasr_jax.infer.stream_data import main

if __name__ == "__main__":
    sys.exit(main())
