"""2-D convolution with a faster weight gradient on XLA:CPU; same math as ``lax.conv_general_dilated``.

Forward pass and input gradient are XLA's own convolutions. The weight gradient, which
XLA:CPU computes several times slower than a matmul of the same size, is one matmul: the
strided slices of the padded channel-major input (one row per kernel tap and channel) times
the output gradient. In that layout the matmul runs near peak, and the slices are contiguous
copies (a tap-minor im2col [pixels, taps * C] was 1.2-2x slower, transposed matmul included).
1x1 convolutions are a strided slice and a matmul in both directions.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _tap_rows(x: jax.Array, kh: int, kw: int, stride, padding, out_h: int, out_w: int):
    """[kh * kw * C, B * out_h * out_w]: per kernel tap and input channel, the input pixels
    that tap sees, from channel-major ``x`` so each row is one contiguous strided slice."""
    batch, _, _, cin = x.shape
    xt = jnp.pad(x.transpose(3, 0, 1, 2), ((0, 0), (0, 0), padding[0], padding[1]))
    taps = [
        lax.slice(
            xt,
            (0, 0, i, j),
            (cin, batch, i + stride[0] * (out_h - 1) + 1, j + stride[1] * (out_w - 1) + 1),
            (1, 1, stride[0], stride[1]),
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.stack(taps).reshape(kh * kw * cin, -1)


def _conv(x, w, stride, padding):
    return lax.conv_general_dilated(x, w, stride, padding, dimension_numbers=NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_fast_wgrad(x, w, stride, padding):
    return _conv(x, w, stride, padding)


def _fwd(x, w, stride, padding):
    return _conv(x, w, stride, padding), (x, w)


def _bwd(stride, padding, residuals, g):
    x, w = residuals
    kh, kw, cin, cout = w.shape
    _, dx_fn = jax.vjp(lambda x: _conv(x, w, stride, padding), x)
    rows = _tap_rows(x, kh, kw, stride, padding, *g.shape[1:3])
    dw = (rows @ g.reshape(-1, cout)).reshape(kh, kw, cin, cout)
    return dx_fn(g)[0], dw


_conv_fast_wgrad.defvjp(_fwd, _bwd)


def _conv_1x1(x, w, stride, padding):
    x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    return x[:, :: stride[0], :: stride[1], :] @ w[0, 0]


def conv2d(
    x: jax.Array,
    w: jax.Array,
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
) -> jax.Array:
    """NHWC input, HWIO kernel, explicit padding; equal to XLA's convolution and its gradients."""
    stride, padding = tuple(stride), tuple(tuple(p) for p in padding)
    if w.shape[:2] == (1, 1):
        return _conv_1x1(x, w, stride, padding)
    return _conv_fast_wgrad(x, w, stride, padding)
