"""A conv with few kernel taps x input channels (an RGB stem) as one fused sum of products.

XLA:CPU's convolution runs such a conv far below its compute. Written as a sum, over taps and
input channels, of a shifted input channel [B, OH, OW, 1] times the kernel's row [C_out], XLA
fuses the forward pass into one elementwise loop. Gradients: ``weight_grad.backward``.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from flaxcnn.ops import fusion_barrier
from flaxcnn.ops import geometry
from flaxcnn.ops import vjp
from flaxcnn.ops import weight_grad


@vjp.keeping_inputs(weight_grad.backward)
def tap_sum_conv(x, w, stride, padding):
    """NHWC ``x``, HWIO ``w``, explicit padding.

    The result is kept in memory (``fusion_barrier.stored``): otherwise XLA fuses the products
    into each consumer and recomputes them there (a following max-pool's value, index and
    backward).
    """
    kh, kw, cin, _ = w.shape

    def products(x):
        terms = (
            tap[..., c : c + 1] * w[t // kw, t % kw, c]
            for t, tap in enumerate(geometry.tap_slices(x, (kh, kw), stride, padding))
            for c in range(cin)
        )
        return functools.reduce(jnp.add, terms)

    return fusion_barrier.stored(x, products)
