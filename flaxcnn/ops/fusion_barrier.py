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


def stored(x, transform: Callable = lambda a: a):
    """``transform(x)`` computed inside a conditional whose predicate is always true.

    ``x`` is an array or a pytree of arrays (``transform`` maps it to another). The predicate
    reads the bits of one element of ``x``'s first array as a signed integer (``>= 0 or
    < 0``), so XLA cannot prove it constant and remove the conditional, whatever the values
    (NaN too). ``transform`` (e.g. a pad) stays inside: XLA cannot fold it into consumers.
    """
    first = jax.tree.leaves(x)[0]
    if not first.size:
        return transform(x)
    first = first.reshape(-1)[0]
    bits = lax.bitcast_convert_type(first, jnp.dtype(f'int{8 * first.dtype.itemsize}'))
    zeros = lambda a: jax.tree.map(jnp.zeros_like, transform(a))
    return lax.cond((bits >= 0) | (bits < 0), transform, zeros, x)
