"""Fast reformulations of conv, depthwise conv, max-pool and batch norm, with a switch back
to plain XLA ops.

The fast paths compute the same math as the plain ``lax`` formulation (tests compare outputs
and gradients; Winograd convs round differently) and are the default; ``'plain'`` selects
XLA's own ops, e.g. on GPU. The choice is read when a model is traced, so it is set before
tracing, for good with ``set_implementation(name)`` or for a block with ``with use(name):``.
Which conv takes which route: ``routes``; why each route is faster: ops/README.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from jax import lax

from flaxcnn.ops import normalization
from flaxcnn.ops import pooling
from flaxcnn.ops import routes

IMPLEMENTATIONS = ('fast', 'plain')
_implementation = 'fast'


def set_implementation(name: str) -> None:
    """Selects 'fast' (custom_vjp reformulations) or 'plain' (XLA's ops) for later traces."""
    global _implementation
    if name not in IMPLEMENTATIONS:
        raise ValueError(f'Unknown ops implementation {name!r}; expected one of {IMPLEMENTATIONS}.')
    _implementation = name


def implementation() -> str:
    """The implementation in use: 'fast' or 'plain'."""
    return _implementation


@contextlib.contextmanager
def use(name: str) -> Iterator[None]:
    """``set_implementation(name)`` for the block; the previous one is back on exit, also when
    the block raises.

    It applies to what is traced inside the block: a function jax has already traced (and
    cached) keeps the ops it was traced with.
    """
    previous = _implementation
    set_implementation(name)
    try:
        yield
    finally:
        set_implementation(previous)


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """2-D max-pool of NHWC ``x`` padded with -inf (PyTorch semantics)."""
    if _implementation == 'fast':
        return pooling.max_pool(x, window, stride, padding)
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), pads
    )


def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
    """Training-mode BatchNorm of NHWC ``x``: (normalised x, batch mean, biased batch variance).

    The statistics are for the running averages; use them under ``lax.stop_gradient``.
    """
    if _implementation == 'fast':
        return normalization.batch_norm(x, scale, bias, epsilon)
    return normalization.normalize(x, scale, bias, epsilon)


def conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs):
    """Drop-in for ``lax.conv_general_dilated`` (``nnx.Conv``'s hook): the fast routes
    (``routes.conv_general_dilated``) or XLA's convolution."""
    if _implementation == 'fast':
        return routes.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
