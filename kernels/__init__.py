"""Attention and CTC kernels behind one dispatch each (see kernels/README.md)."""

from kernels._dispatch import record_selections
from kernels._partition import KernelLayout, current_layout, kernel_layout

__all__ = ["KernelLayout", "current_layout", "kernel_layout", "record_selections"]
