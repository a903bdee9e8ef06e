"""Stride-1 convs computed in Eigen rather than YNNPACK, by a taller output.

XLA:CPU hands convolutions to YNNPACK, which runs a wide forward pass or input gradient below
its other convolution library, Eigen. No flag selects the library per op, but YNNPACK declines
a convolution whose output is larger than its input (``ynn_support.cc``): so the forward pass
and the input gradient are computed with one output row more than the input has rows, and
sliced. The weight gradient is ``weight_grad``'s (an Eigen convolution too).
"""

from __future__ import annotations

from jax import lax

from flaxcnn.ops import geometry
from flaxcnn.ops import vjp
from flaxcnn.ops import weight_grad
from flaxcnn.ops.xla_conv import NHWC


def _taller(x, w, padding):
    """Stride-1 conv with more output rows than ``x`` has rows (extra ones computed, then
    sliced off when needed)."""
    (top, bottom), columns = padding
    extra = max(0, x.shape[1] + 1 - geometry.output_size(x.shape[1], w.shape[0], 1, (top, bottom)))
    y = lax.conv_general_dilated(
        x, w, (1, 1), ((top, bottom + extra), columns), dimension_numbers=NHWC
    )
    return y[:, : y.shape[1] - extra]


def _backward(padding, residuals, g):
    x, w = residuals
    flipped = w[::-1, ::-1].transpose(0, 1, 3, 2)
    transposed_padding = tuple((k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(padding, w.shape))
    dx = _taller(g, flipped, transposed_padding)
    return dx, weight_grad.weight_grad(x, w.shape, (1, 1), padding, g)


@vjp.keeping_inputs(_backward, nondiff_argnums=(2,))
def eigen_conv(x, w, padding):
    """NHWC ``x``, HWIO ``w``, stride 1, padding that keeps the output no larger than the
    input."""
    return _taller(x, w, padding)
