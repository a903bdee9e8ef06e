"""2-D convolution with a faster weight gradient on XLA:CPU; same math as ``lax.conv_general_dilated``.

Forward pass and input gradient are XLA's own convolutions. The weight gradient, which
XLA:CPU computes several times slower than a matmul of the same size, is one matmul:
the stacked strided slices of the padded input (one per kernel tap) transposed, times the
output gradient. 1x1 convolutions are a strided slice and a matmul in both directions.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _patches(xp: jax.Array, kh: int, kw: int, stride, out_h: int, out_w: int) -> jax.Array:
    """[B, out_h, out_w, kh * kw * C]: tap-major stack of strided slices of padded ``xp``."""
    taps = [
        lax.slice(
            xp,
            (0, i, j, 0),
            (
                xp.shape[0],
                i + stride[0] * (out_h - 1) + 1,
                j + stride[1] * (out_w - 1) + 1,
                xp.shape[3],
            ),
            (1, stride[0], stride[1], 1),
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.concatenate(taps, axis=-1)


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
    xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    out_h, out_w = g.shape[1:3]
    cols = _patches(xp, kh, kw, stride, out_h, out_w).reshape(-1, kh * kw * cin)
    dw = (cols.T @ g.reshape(-1, cout)).reshape(kh, kw, cin, cout)
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
