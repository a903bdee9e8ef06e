"""Fast reformulations of conv, depthwise conv, max-pool and batch norm, with a switch back
to plain XLA ops.

The fast paths compute the same math as the plain ``lax`` formulation (tests compare outputs
and gradients; Winograd convs round differently, ``winograd_conv``) and are the default;
``set_implementation('plain')`` selects XLA's own ops, e.g. on GPU. The choice is read when a
model is traced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from flaxcnn.ops import fast_batch_norm
from flaxcnn.ops import fast_conv
from flaxcnn.ops import fast_depthwise_conv
from flaxcnn.ops import fast_max_pool

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


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """2-D max-pool of NHWC ``x`` padded with -inf (PyTorch semantics)."""
    if _implementation == 'fast':
        return fast_max_pool.max_pool(x, window, stride, padding)
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), pads
    )


def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
    """Training-mode BatchNorm of NHWC ``x``: (normalised x, batch mean, biased batch variance).

    The statistics are for the running averages; use them under ``lax.stop_gradient``.
    """
    if _implementation == 'fast':
        return fast_batch_norm.batch_norm(x, scale, bias, epsilon)
    return fast_batch_norm.normalize(x, scale, bias, epsilon)


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    **kwargs,
):
    """Drop-in for ``lax.conv_general_dilated`` (``nnx.Conv``'s hook); fast paths for plain and
    depthwise 2-D convs."""
    depthwise = feature_group_count > 1 and lhs.shape[-1] == rhs.shape[-1] == feature_group_count
    plain = (
        _implementation == 'plain'
        or lhs.ndim != 4
        or isinstance(padding, str)
        or (feature_group_count != 1 and not depthwise)
        or kwargs.get('precision') is not None
        or any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
        or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        != lax.conv_dimension_numbers(lhs.shape, rhs.shape, fast_conv.NHWC)
    )
    if plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            **kwargs,
        )
    if depthwise:
        return fast_depthwise_conv.depthwise_conv2d(lhs, rhs, window_strides, padding)
    return fast_conv.conv2d(lhs, rhs, window_strides, padding)
