"""Keep an intermediate in memory on XLA:CPU, where it would otherwise be fused or folded.

``lax.optimization_barrier`` does not do this on XLA:CPU (it is dropped before fusion). A
conditional is a fusion boundary, and XLA cannot fold a transpose or a fusion through it,
so an array passed through an always-true conditional is computed once, written to memory
in its own row-major layout, and read from there by every consumer.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax


def stored(x: jax.Array, transform: Callable[[jax.Array], jax.Array] = lambda a: a) -> jax.Array:
    """``transform(x)`` computed inside a conditional whose predicate is always true.

    The predicate reads the bits of one element of ``x`` as a signed integer (``>= 0 or
    < 0``), so XLA cannot prove it constant and remove the conditional, whatever the values
    (NaN too). ``transform`` (e.g. a pad) stays inside: XLA cannot fold it into consumers.
    """
    if not x.size:
        return transform(x)
    first = x.reshape(-1)[0]
    bits = lax.bitcast_convert_type(first, jnp.dtype(f'int{8 * first.dtype.itemsize}'))
    zeros = lambda a: jnp.zeros_like(transform(a))
    return lax.cond((bits >= 0) | (bits < 0), transform, zeros, x)
