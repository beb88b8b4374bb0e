from kernels.ctc.api import ctc_loss  # noqa: F401
