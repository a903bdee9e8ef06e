"""1x1 convolutions: a strided slice and a matmul in both directions.

The weight gradient is written ``(g^T @ x)^T``, which XLA runs without transposing ``g``;
autodiff's ``x^T @ g`` makes it write ``g^T`` to memory first.
"""

from __future__ import annotations

import jax.numpy as jnp

from flaxcnn.ops import vjp


def conv_1x1(x, w, stride, padding):
    """NHWC ``x``, [1, 1, C_in, C_out] ``w``, explicit padding."""
    x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    return matmul_1x1(x[:, :: stride[0], :: stride[1], :], w[0, 0])


def _matmul_1x1_backward(residuals, g):
    x, w = residuals
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    return g @ w.T, (g2.T @ x2).T


@vjp.keeping_inputs(_matmul_1x1_backward, nondiff_argnums=())
def matmul_1x1(x, w):
    """``x @ w`` with the weight gradient as ``(g^T @ x)^T``."""
    return x @ w
