"""A conv as one matmul of its tap columns with the kernel (im2col).

For a moderate input width C and enough output channels to amortise building the columns,
XLA:CPU's convolution runs at about half matmul speed, while the columns ``[pixels, taps * C]``
(strided NHWC slices, C contiguous floats per pixel and tap) make the forward pass one matmul.
The columns are kept for the weight gradient, another matmul, written ``(g^T @ columns)^T``;
the input gradient is XLA's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from flaxcnn.ops import geometry
from flaxcnn.ops import xla_conv


def _columns(x, kernel, stride, padding):
    """[B * out_h * out_w, kh * kw * C]: im2col of NHWC ``x``, tap-major and channel-minor."""
    taps = geometry.tap_slices(x, kernel, stride, padding)
    return jnp.stack(taps, -2).reshape(-1, kernel[0] * kernel[1] * x.shape[-1])


def _forward(x, w, stride, padding):
    batch, height, width, _ = x.shape
    cout = w.shape[-1]
    columns = _columns(x, w.shape[:2], stride, padding)
    out_h, out_w = geometry.output_hw(height, width, w.shape, stride, padding)
    y = (columns @ w.reshape(-1, cout)).reshape(batch, out_h, out_w, cout)
    return y, (columns, w, x.shape)


def _backward(stride, padding, residuals, g):
    columns, w, x_shape = residuals
    g2 = g.reshape(-1, w.shape[-1])
    dw = (g2.T @ columns).T.reshape(w.shape)
    return xla_conv.input_grad(x_shape, w, stride, padding, g), dw


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def im2col_conv(x, w, stride, padding):
    """NHWC ``x``, HWIO ``w``, explicit padding."""
    return _forward(x, w, stride, padding)[0]


im2col_conv.defvjp(_forward, _backward)
