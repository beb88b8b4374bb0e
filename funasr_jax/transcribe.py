"""Command line: `python -m funasr_jax.transcribe` (the work is in `funasr_jax.infer.transcribe`)."""

import sys

from funasr_jax.infer.transcribe import main

if __name__ == "__main__":
    sys.exit(main())
