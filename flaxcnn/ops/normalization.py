"""Training-mode BatchNorm over NHWC with a closed-form backward pass.

Same math as ``nnx.BatchNorm`` in training mode (batch mean, variance ``E[x^2] - E[x]^2``
clipped at 0, ``(x - mean) * rsqrt(var + eps) * scale + bias``). Differentiating that
formula makes XLA reduce over the batch for the mean and the variance paths separately; the
closed form needs two channel sums, ``sum(dy)`` and ``sum(dy * xhat)``, and one elementwise
pass: ``dx = scale * rsqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))``. The
second sum is taken as ``rsqrt(var + eps) * (sum(dy * x) - mean * sum(dy))``: XLA:CPU would
otherwise write ``xhat`` to memory for the reduction.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_AXES = (0, 1, 2)


def _forward(x, scale, bias, epsilon):
    """(y, mean, var, rsqrt(var + eps)): the formula, differentiable by autodiff."""
    mean = jnp.mean(x, _AXES)
    var = jnp.maximum(0.0, jnp.mean(jnp.square(x), _AXES) - jnp.square(mean))
    inv = lax.rsqrt(var + epsilon)
    return (x - mean) * (inv * scale) + bias, mean, var, inv


def normalize(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
    """``batch_norm`` differentiated by autodiff: the plain formulation."""
    return _forward(x, scale, bias, epsilon)[:3]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
    """Normalised ``x`` [N, H, W, C] and the batch mean and (biased) variance [C].

    The statistics are returned for the running averages; their cotangents are ignored, so
    use them under ``lax.stop_gradient``.
    """
    return _forward(x, scale, bias, epsilon)[:3]


def _batch_norm_fwd(x, scale, bias, epsilon):
    y, mean, var, inv = _forward(x, scale, bias, epsilon)
    return (y, mean, var), (x, mean, inv, scale)


def _batch_norm_bwd(epsilon, residuals, cotangents):
    x, mean, inv, scale = residuals
    dy = cotangents[0]
    xhat = (x - mean) * inv
    dbias = jnp.sum(dy, _AXES)
    dscale = inv * (jnp.sum(dy * x, _AXES) - mean * dbias)
    count = x.size // x.shape[-1]
    dx = (scale * inv) * (dy - (dbias / count + xhat * (dscale / count)))
    return dx, dscale, dbias


batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)
