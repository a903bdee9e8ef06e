"""Depthwise 2-D convolution as per-tap multiply-adds; same math as XLA's grouped convolution.

XLA:CPU runs a convolution with ``feature_group_count == channels`` (one input channel per
group) far below its compute. Here each kernel tap is a strided slice of the padded input
scaled by that tap's per-channel weights, and the taps are summed; XLA fuses that into one
loop. The input gradient is the transpose of that linear map (a sum of padded, scaled output
gradients); the weight gradient is, per tap, the sum over pixels of the tap's slice times the
output gradient. Only the input is kept for the backward pass, not one slice per tap.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flaxcnn.ops import geometry
from flaxcnn.ops import vjp


def _forward(x, w, stride, padding):
    kh, kw = w.shape[:2]
    taps = geometry.tap_slices(x, (kh, kw), stride, padding)
    return sum((tap * w[k // kw, k % kw, 0] for k, tap in enumerate(taps)), start=0.0)


def _backward(stride, padding, residuals, g):
    x, w = residuals
    x_spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
    dx = jax.linear_transpose(lambda x: _forward(x, w, stride, padding), x_spec)(g)[0]
    kh, kw = w.shape[:2]
    dw = jnp.stack(
        [jnp.sum(tap * g, (0, 1, 2)) for tap in geometry.tap_slices(x, (kh, kw), stride, padding)]
    )
    return dx, dw.reshape(w.shape)


@vjp.keeping_inputs(_backward)
def depthwise_conv(x, w, stride, padding):
    return _forward(x, w, stride, padding)


def depthwise_conv2d(
    x: jax.Array,
    w: jax.Array,
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
) -> jax.Array:
    """NHWC ``x`` [B, H, W, C], HWIO kernel [kh, kw, 1, C], explicit padding."""
    return depthwise_conv(x, w, tuple(stride), tuple(tuple(p) for p in padding))
