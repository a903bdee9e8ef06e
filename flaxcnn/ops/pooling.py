"""Max-pooling whose backward pass is a strided pad instead of XLA's ``select_and_scatter``.

Same math as ``lax.reduce_window(max)`` with -inf padding and its gradient (the gradient goes
to the first maximum of each window, in row-major window order), several times faster on
XLA:CPU: the forward pass records which window tap held the maximum (and keeps that index
in memory, ``fusion_barrier.stored``); the backward pass places each tap's share of the
output gradient with an interior-padded ``lax.pad``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from flaxcnn.ops import fusion_barrier
from flaxcnn.ops import geometry


def _forward(x: jax.Array, window: int, stride: int, padding: int):
    kernel, strides = (window, window), (stride, stride)
    out_hw = geometry.output_hw(*x.shape[1:3], kernel, strides, ((padding, padding),) * 2)
    pads = ((0, 0, 0), (padding, padding, 0), (padding, padding, 0), (0, 0, 0))
    xp = lax.pad(x, jnp.array(-jnp.inf, x.dtype), pads)
    best, index = None, None
    for k, tap in enumerate(geometry.strided_taps(xp, kernel, strides, out_hw)):
        if best is None:
            best, index = tap, jnp.zeros(tap.shape, jnp.int8)
        else:
            better = tap > best  # strict: ties keep the first maximum
            best = jnp.where(better, tap, best)
            index = jnp.where(better, jnp.int8(k), index)
    return best, index


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """2-D max-pool of NHWC ``x``, padded with -inf (PyTorch semantics, floor output size)."""
    return _forward(x, window, stride, padding)[0]


def _max_pool_fwd(x, window, stride, padding):
    out, index = _forward(x, window, stride, padding)
    # Kept in memory: XLA:CPU would otherwise fuse the window argmax into the backward pass
    # and recompute it there for every tap that reads it.
    return out, (fusion_barrier.stored(index), x.shape)


def _max_pool_bwd(window, stride, padding, residuals, g):
    index, shape = residuals
    _, height, width, _ = shape
    out_h, out_w = g.shape[1:3]
    padded_h, padded_w = height + 2 * padding, width + 2 * padding
    zero = jnp.zeros((), g.dtype)
    grad = None
    for k in range(window * window):
        i, j = divmod(k, window)
        share = jnp.where(index == k, g, zero)
        placed = lax.pad(
            share,
            zero,
            (
                (0, 0, 0),
                (i, padded_h - i - stride * (out_h - 1) - 1, stride - 1),
                (j, padded_w - j - stride * (out_w - 1) - 1, stride - 1),
                (0, 0, 0),
            ),
        )
        grad = placed if grad is None else grad + placed
    return (grad[:, padding : padding + height, padding : padding + width, :],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
