"""XLA's own convolution and its input gradient: the parts of a conv the matmul routes keep."""

from __future__ import annotations

import jax
from jax import lax

NHWC = ('NHWC', 'HWIO', 'NHWC')


def conv(x, w, stride, padding):
    """NHWC ``x``, HWIO ``w``, explicit padding: ``lax.conv_general_dilated``."""
    return lax.conv_general_dilated(x, w, stride, padding, dimension_numbers=NHWC)


def input_grad(x_shape, w, stride, padding, g):
    """XLA's transposed convolution: the gradient of ``conv`` with respect to its input."""
    x_spec = jax.ShapeDtypeStruct(x_shape, g.dtype)
    return jax.linear_transpose(lambda x: conv(x, w, stride, padding), x_spec)(g)[0]
