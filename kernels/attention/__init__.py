from kernels.attention.api import attention  # noqa: F401
