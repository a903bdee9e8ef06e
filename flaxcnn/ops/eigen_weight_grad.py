"""The weight gradient of a stride-1 conv as one Eigen convolution.

The channel-major input [C, H, W, B] (batch as features) is convolved with the output
gradient [OH + extra, OW, B, C_out] as kernel. XLA:CPU hands convolutions to YNNPACK, which
runs a weight gradient far below matmul speed; it declines a kernel taller than its input
(``ynn_support.cc``), so ``extra`` zero rows make the kernel one row taller than the input and
the convolution runs in Eigen instead.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from flaxcnn.ops import fusion_barrier
from flaxcnn.ops import geometry
from flaxcnn.ops.xla_conv import NHWC


def extra_rows(x_shape, w_shape, stride, padding) -> int | None:
    """Zero rows to append to ``g`` for ``weight_grad``, or None where it does not apply
    (strided, negative padding, or XLA would swap the convolution's operands)."""
    _, height, width, _ = x_shape
    (top, bottom), (left, right) = padding
    if stride != (1, 1) or min(top, bottom, left, right) < 0 or w_shape[1] == 1:
        return None
    out_h, out_w = geometry.output_hw(height, width, w_shape, stride, padding)
    extra = max(1, height + 1 - out_h)
    # XLA swaps a convolution's operands when its kernel has more spatial elements than its
    # input, not counting a kernel dimension as wide as the input (conv_operand_swapper.cc,
    # hence no k x 1 kernels); the swapped one is window-reversed, which Eigen declines.
    if (out_h + extra) * out_w > height * (width + left + right):
        return None
    return extra


def weight_grad(x, padding, g, extra):
    """Stride-1 kernel gradient [kh, kw, C_in, C_out] of NHWC ``x`` for output gradient ``g``.

    The input's column padding is explicit, inside a conditional, so that XLA neither folds it
    into the window nor swaps the operands (both would leave Eigen's fast path). The input is
    transposed in two steps: [B, H * W * C] -> [H * W * C, B], which reads each cache line of
    ``x`` once, then [H, W, C, B] -> [C, H, W, B], which moves whole rows of B floats. XLA's
    one-step transpose re-reads each line for every channel in it.
    """
    (top, bottom), (left, right) = padding
    batch, height, width, cin = x.shape
    xt = fusion_barrier.stored(
        x.reshape(batch, -1).T,
        lambda rows: jnp.pad(
            rows.reshape(height, width, cin, batch).transpose(2, 0, 1, 3),
            ((0, 0), (0, 0), (left, right), (0, 0)),
        ),
    )
    gt = jnp.pad(g.transpose(1, 2, 0, 3), ((0, extra), (0, 0), (0, 0), (0, 0)))
    dw = lax.conv_general_dilated(
        xt, gt, (1, 1), ((top, bottom + extra), (0, 0)), dimension_numbers=NHWC
    )
    return dw.transpose(1, 2, 0, 3)
