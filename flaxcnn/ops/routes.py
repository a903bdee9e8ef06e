"""Which route takes which convolution: the dispatch table of the fast ops.

XLA:CPU hands convolutions to YNNPACK, which computes a weight gradient several times slower
than a matmul of the same size and a wide forward pass or input gradient below XLA's other
convolution library, Eigen; grouped (depthwise) and few-channel convs run far below the
machine's compute. Each route reformulates a conv so that XLA runs it on a faster path; all
compute the same math as ``lax.conv_general_dilated`` (Winograd rounds differently). The first
route whose condition holds takes the conv (``conv2d``); ops/README.md explains each route
and its measured gain.

| route (module)               | takes                                                       |
|------------------------------|-------------------------------------------------------------|
| 1x1 (``pointwise``)          | 1x1 kernels                                                 |
| Winograd (``winograd``)      | large 3x3 stride-1 convs, >= WINOGRAD_CHANNELS inputs       |
| Eigen (``eigen``)            | other large stride-1 convs, >= EIGEN_CHANNELS inputs        |
| tap sum (``tap_sum``)        | stride 1, <= MAX_TAP_SUM_TERMS kernel taps x input channels |
| im2col (``im2col``)          | MIN_IM2COL_CHANNELS..MAX_IM2COL_CHANNELS - 1 inputs,        |
|                              | >= MIN_IM2COL_OUTPUTS outputs                               |
| XLA + matmul weight gradient | everything else                                             |
| (``weight_grad``)            |                                                             |

"Large" is at least LARGE_CONV_PIXELS input pixels (batch x height x width); smaller convs
stay in YNNPACK, where these routes did not pay. Depthwise convs (one input channel per group)
take ``depthwise``; other grouped, dilated or non-NHWC convs stay XLA's. The weight gradient
of the Eigen, tap-sum and last routes is chosen in ``weight_grad``.
"""

from __future__ import annotations

import jax
from jax import lax

from flaxcnn.ops import depthwise
from flaxcnn.ops import eigen
from flaxcnn.ops import im2col
from flaxcnn.ops import pointwise
from flaxcnn.ops import tap_sum
from flaxcnn.ops import weight_grad
from flaxcnn.ops import winograd
from flaxcnn.ops.xla_conv import NHWC

LARGE_CONV_PIXELS = 32768
WINOGRAD_CHANNELS = 128
EIGEN_CHANNELS = 16
MAX_TAP_SUM_TERMS = 27
# Below this many input channels pixel-major tap slices are copied a float or two at a time.
MIN_IM2COL_CHANNELS = weight_grad.PIXEL_MAJOR_CHANNELS
MAX_IM2COL_CHANNELS = 128
MIN_IM2COL_OUTPUTS = 64


def is_large(x_shape) -> bool:
    """At least LARGE_CONV_PIXELS input pixels (batch x height x width)."""
    return x_shape[0] * x_shape[1] * x_shape[2] >= LARGE_CONV_PIXELS


def use_winograd(x_shape, w_shape, stride, padding) -> bool:
    """3x3, stride 1, at least WINOGRAD_CHANNELS inputs, large, each pad 0..2, a non-empty
    output (F(4x4, 3x3)'s tiles assume these)."""
    return (
        w_shape[:2] == (3, 3)
        and stride == (1, 1)
        and w_shape[2] >= WINOGRAD_CHANNELS
        and is_large(x_shape)
        and all(0 <= p <= 2 for pair in padding for p in pair)
        and min(x_shape[1] + sum(padding[0]), x_shape[2] + sum(padding[1])) >= 3
    )


def use_eigen(x_shape, w_shape, stride, padding) -> bool:
    """Stride 1, at least EIGEN_CHANNELS inputs, large, and padding that keeps the output no
    larger than the input (the taller output is what keeps it out of YNNPACK)."""
    kernel = w_shape[:2]
    return (
        stride == (1, 1)
        and w_shape[2] >= EIGEN_CHANNELS
        and is_large(x_shape)
        and all(min(p) >= 0 and sum(p) < k for p, k in zip(padding, kernel))
    )


def use_tap_sum(w_shape, stride) -> bool:
    """Stride 1 and at most MAX_TAP_SUM_TERMS kernel taps x input channels."""
    kh, kw, cin, _ = w_shape
    return stride == (1, 1) and kh * kw * cin <= MAX_TAP_SUM_TERMS


def use_im2col(w_shape) -> bool:
    """A moderate input width and enough outputs to amortise building the columns."""
    cin, cout = w_shape[2:]
    return MIN_IM2COL_CHANNELS <= cin < MAX_IM2COL_CHANNELS and cout >= MIN_IM2COL_OUTPUTS


def conv2d(
    x: jax.Array,
    w: jax.Array,
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
) -> jax.Array:
    """NHWC input, HWIO kernel, explicit padding; equal to XLA's convolution and its gradients."""
    stride, padding = tuple(stride), tuple(tuple(p) for p in padding)
    if w.shape[:2] == (1, 1):
        return pointwise.conv_1x1(x, w, stride, padding)
    if use_winograd(x.shape, w.shape, stride, padding):
        return winograd.conv3x3(x, w, padding)
    if use_eigen(x.shape, w.shape, stride, padding):
        return eigen.eigen_conv(x, w, padding)
    if use_tap_sum(w.shape, stride):
        return tap_sum.tap_sum_conv(x, w, stride, padding)
    if use_im2col(w.shape):
        return im2col.im2col_conv(x, w, stride, padding)
    return weight_grad.xla_conv_matmul_weight_grad(x, w, stride, padding)


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
    """``lax.conv_general_dilated`` through the fast routes: depthwise convs to ``depthwise``,
    other plain NHWC 2-D convs to ``conv2d``, the rest (grouped, dilated, string padding, an
    explicit precision, other layouts) to XLA."""
    is_depthwise = (
        feature_group_count > 1 and lhs.shape[-1] == rhs.shape[-1] == feature_group_count
    )
    xla_only = (
        lhs.ndim != 4
        or isinstance(padding, str)
        or (feature_group_count != 1 and not is_depthwise)
        or kwargs.get('precision') is not None
        or any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
        or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        != lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
    )
    if xla_only:
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
    if is_depthwise:
        return depthwise.depthwise_conv2d(lhs, rhs, window_strides, padding)
    return conv2d(lhs, rhs, window_strides, padding)
