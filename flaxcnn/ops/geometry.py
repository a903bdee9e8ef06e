"""Spatial geometry shared by the conv and pool routes and the models: written once.

A kernel tap (i, j) of a strided conv or pool sees one strided slice of the padded input;
every route that reads taps (im2col, tap sum, matmul weight gradients, depthwise, max-pool)
takes them from here, so the output size and the slice bounds cannot disagree between them.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Padding = tuple[tuple[int, int], tuple[int, int]]


def output_size(size: int, kernel: int, stride: int = 1, padding: int | tuple[int, int] = 0) -> int:
    """Output length of a conv or pool along one axis (PyTorch's floor formula).

    ``padding`` is one amount for both sides or ``(before, after)``.
    """
    before, after = (padding, padding) if isinstance(padding, int) else padding
    return (size + before + after - kernel) // stride + 1


def output_hw(
    height: int, width: int, kernel: Sequence[int], stride: Sequence[int], padding: Padding
) -> tuple[int, int]:
    """(out_h, out_w) of a 2-D conv or pool."""
    return (
        output_size(height, kernel[0], stride[0], padding[0]),
        output_size(width, kernel[1], stride[1], padding[1]),
    )


def strided_taps(
    padded: jax.Array,
    kernel: Sequence[int],
    stride: Sequence[int],
    out_hw: Sequence[int],
    axes: tuple[int, int] = (1, 2),
) -> list[jax.Array]:
    """Per kernel tap, row-major: the strided slice of the already padded array it sees.

    ``axes`` are the height and width axes; the others are taken whole.
    """
    taps = []
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            start, limit, strides = [0] * padded.ndim, list(padded.shape), [1] * padded.ndim
            for axis, first, step, count in zip(axes, (i, j), stride, out_hw):
                start[axis], strides[axis] = first, step
                limit[axis] = first + step * (count - 1) + 1
            taps.append(lax.slice(padded, tuple(start), tuple(limit), tuple(strides)))
    return taps


def tap_slices(
    x: jax.Array, kernel: Sequence[int], stride: Sequence[int], padding: Padding
) -> list[jax.Array]:
    """Per kernel tap, row-major: the [B, out_h, out_w, C] pixels of NHWC ``x`` (zero-padded)
    it sees."""
    out_hw = output_hw(*x.shape[1:3], kernel, stride, padding)
    padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    return strided_taps(padded, kernel, stride, out_hw)


def channel_major_tap_slices(
    x: jax.Array, kernel: Sequence[int], stride: Sequence[int], padding: Padding
) -> list[jax.Array]:
    """``tap_slices`` of NHWC ``x`` transposed to channel-major: per tap [C, B, out_h, out_w],
    so that each channel's pixels are one contiguous strided slice."""
    out_hw = output_hw(*x.shape[1:3], kernel, stride, padding)
    padded = jnp.pad(x.transpose(3, 0, 1, 2), ((0, 0), (0, 0), padding[0], padding[1]))
    return strided_taps(padded, kernel, stride, out_hw, axes=(2, 3))
