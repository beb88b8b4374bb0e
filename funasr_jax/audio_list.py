"""Command line: `python -m funasr_jax.audio_list` (the work is in `funasr_jax.data.audio_list`)."""

import sys

from funasr_jax.data.audio_list import main

if __name__ == "__main__":
    sys.exit(main())
