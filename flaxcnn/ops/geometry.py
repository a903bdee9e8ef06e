"""Spatial geometry shared by the conv and pool routes and the models: written once."""

from __future__ import annotations


def output_size(size: int, kernel: int, stride: int = 1, padding: int | tuple[int, int] = 0) -> int:
    """Output length of a conv or pool along one axis (PyTorch's floor formula).

    ``padding`` is one amount for both sides or ``(before, after)``.
    """
    before, after = (padding, padding) if isinstance(padding, int) else padding
    return (size + before + after - kernel) // stride + 1
