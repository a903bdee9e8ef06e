"""A conv's weight gradient, and the route that pairs it with XLA's forward conv.

XLA:CPU hands a conv's weight gradient to YNNPACK, which computes it several times slower
than a matmul of the same size. So the kernel gradient is, in this order:

- stride 1 from ``PIXEL_MAJOR_CHANNELS`` input channels: one Eigen convolution
  (``eigen_weight_grad``);
- below ``PIXEL_MAJOR_CHANNELS`` (the 1- and 3-channel stems, whose pixel-major slices would
  be copied a float or two at a time): one matmul of channel-major tap rows
  ``[taps * C, pixels]`` with the output gradient;
- otherwise one matmul per kernel tap, the tap's strided NHWC slice ``[pixels, C]``,
  transposed, times the output gradient; no im2col buffer. From ``YNN_WGRAD_CHANNELS`` in and
  out channels it is written ``g^T @ tap`` with ``g^T`` kept in memory
  (``fusion_barrier.stored``): a row-major left operand, which XLA hands to YNNPACK, faster
  than Eigen there. Autodiff's ``tap^T @ g`` has both operands pixel-major and runs in Eigen;
  XLA folds a plain ``g^T`` back into the dot.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from flaxcnn.ops import eigen_weight_grad
from flaxcnn.ops import fusion_barrier
from flaxcnn.ops import geometry
from flaxcnn.ops import vjp
from flaxcnn.ops import xla_conv

PIXEL_MAJOR_CHANNELS = 16
YNN_WGRAD_CHANNELS = 256


def weight_grad(x, w_shape, stride, padding, g):
    """The kernel gradient [kh, kw, C_in, C_out] of NHWC ``x`` for output gradient ``g``."""
    kh, kw, cin, cout = w_shape
    if cin >= PIXEL_MAJOR_CHANNELS:
        extra = eigen_weight_grad.extra_rows(x.shape, w_shape, stride, padding)
        if extra is not None:
            return eigen_weight_grad.weight_grad(x, padding, g, extra)
    g2 = g.reshape(-1, cout)
    if cin < PIXEL_MAJOR_CHANNELS:
        return (_tap_rows(x, (kh, kw), stride, padding) @ g2).reshape(w_shape)
    taps = geometry.tap_slices(x, (kh, kw), stride, padding)
    if min(cin, cout) >= YNN_WGRAD_CHANNELS:
        g_t = fusion_barrier.stored(g2.T)
        dw_t = [g_t @ tap.reshape(-1, cin) for tap in taps]
        return jnp.stack(dw_t).transpose(0, 2, 1).reshape(w_shape)
    contract_pixels = (((0,), (0,)), ((), ()))
    dw = [lax.dot_general(tap.reshape(-1, cin), g2, contract_pixels) for tap in taps]
    return jnp.stack(dw).reshape(w_shape)


def _tap_rows(x, kernel, stride, padding):
    """[kh * kw * C, B * out_h * out_w]: per kernel tap and input channel, the input pixels
    that tap sees, each row one contiguous strided slice of channel-major ``x``."""
    taps = geometry.channel_major_tap_slices(x, kernel, stride, padding)
    return jnp.stack(taps).reshape(kernel[0] * kernel[1] * x.shape[-1], -1)


def backward(stride, padding, residuals, g):
    """XLA's input gradient and ``weight_grad``: the backward pass of routes keeping (x, w)."""
    x, w = residuals
    dw = weight_grad(x, w.shape, stride, padding, g)
    return xla_conv.input_grad(x.shape, w, stride, padding, g), dw


@vjp.keeping_inputs(backward)
def xla_conv_matmul_weight_grad(x, w, stride, padding):
    """XLA's forward conv and input gradient, with ``weight_grad`` (the route for the convs no
    other route takes)."""
    return xla_conv.conv(x, w, stride, padding)
