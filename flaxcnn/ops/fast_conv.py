"""2-D convolution, faster on XLA:CPU; same math as ``lax.conv_general_dilated``.

XLA:CPU hands convolutions to YNNPACK, which computes a weight gradient several times slower
than a matmul of the same size, and a wide forward pass or input gradient at about 145
GFLOP/s, where XLA's other convolution library, Eigen, reaches 190. The formulation is chosen
by stride, padding and channel counts:

- Winograd F(4x4, 3x3), for large 3x3 stride-1 convs with at least ``WINOGRAD_CHANNELS``
  input channels (``winograd_conv``): 36 matmuls per pass, 4x fewer multiply-adds; same
  convolution, different fp32 rounding.
- Eigen, for other large stride-1 convs with at least ``EIGEN_CHANNELS`` input channels
  (``_use_eigen``): the forward pass and the input gradient are XLA convolutions with one
  output row more than the input has rows, then sliced; XLA keeps such convolutions out of
  YNNPACK (``ynn_support.cc``: an output larger than its input). The weight gradient as
  below.
- a sum of products, for stride-1 convs with at most ``MAX_TAP_SUM_TERMS`` kernel taps x
  input channels (an RGB stem): the forward pass is one fused elementwise sum over the
  terms of a shifted input channel times a row of the kernel; gradients as the last route.
- im2col, for a moderate input width C and an output width that amortises the copy (strided
  or small convs, e.g. MyNet's 3x3 stride-2 convs): the forward pass is one matmul of the
  tap columns ``[pixels, taps * C]`` (strided NHWC slices, C contiguous floats per pixel and
  tap) with the kernel; the columns are kept for the weight gradient ``(g^T @ columns)^T``.
- otherwise XLA's forward convolution, and a weight gradient that depends on stride and C.
  Stride 1 from ``PIXEL_MAJOR_CHANNELS`` on: one Eigen convolution of the channel-major
  input (batch as features) with the output gradient as kernel, one zero row taller than
  the input so that YNNPACK declines it (``_weight_grad_eigen``). Otherwise, from
  ``PIXEL_MAJOR_CHANNELS`` on, one matmul per kernel tap: the tap's strided NHWC slice
  ``[pixels, C]``, transposed, times the output gradient (for wide layers the output
  gradient, transposed, times the slice); no im2col buffer. Below it (a 1- or
  3-channel stem, whose pixel-major slices would be copied a float or two at a time), one
  matmul of channel-major tap rows ``[taps * C, pixels]`` with the output gradient.

1x1 convolutions are a strided slice and a matmul in both directions; the weight gradient is
written ``(g^T @ x)^T``, which XLA runs without transposing ``g`` (autodiff's ``x^T @ g``
made it write ``g^T`` to memory first: MyNet v2 b512 +9% train step).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from flaxcnn.ops import fusion_barrier
from flaxcnn.ops import winograd_conv

NHWC = ('NHWC', 'HWIO', 'NHWC')

# im2col for PIXEL_MAJOR_CHANNELS <= C_in < MAX_IM2COL_CHANNELS and C_out >= MIN_IM2COL_OUTPUTS.
# Measured forward + both gradients, 3x3 kernels (XLA's convolution -> im2col), ms:
# MyNet v2 b512 32->64/2 107 -> 89 and 64->128/2 82 -> 62; 128 x 23x23 64->128 315 -> 238;
# BasicCNN b256 16->32 at 50x50 200 -> 209 (too few outputs); 128->256 and 256->256 at 23x23
# 695 -> 713 and 1387 -> 1445 (XLA's convolution is near matmul speed there).
# Weight gradient alone, tap rows -> per-tap matmuls: 256->256 at 23x23 b128 676 -> 592,
# 128->128 219 -> 193, BasicCNN 16->32 120 -> 107; MyNet's 1-channel stem 83 -> 660.
PIXEL_MAJOR_CHANNELS = 16
MAX_IM2COL_CHANNELS = 128
MIN_IM2COL_OUTPUTS = 64
# Per-tap weight gradients (strided convs) with at least this many input and output channels
# are taken as g^T @ tap, with g^T kept in memory (fusion_barrier.stored): a row-major lhs,
# which XLA hands to YNNPACK (256->256 at 23x23 b128: 9 taps 530 -> 466 ms; ResNet-lite-22
# b128 +2.5-8%). Autodiff's tap^T @ g has both operands pixel-major and runs in Eigen; XLA
# folds a plain g^T back into the dot. With 128 channels the two measured the same.
YNN_WGRAD_CHANNELS = 256
# Stride-1 convs with at least this many input channels run forward and input gradient in
# Eigen (_taller). Forward, 3x3 at 23x23 b128: 64->128 160 -> 67 ms, 256->256 557 -> 470 ms;
# train step ResNet-lite-11 b128 +1 / +3.5 / +8%, ResNet-lite-22 +2.6 / +1.7%. From 16
# channels (64 before): BasicCNN b256's 16->32, 32->64 and 64->128 (then XLA's forward and
# per-tap weight gradient or im2col) 1.13 / 1.16 / 1.04 / 1.09x train step with the Eigen
# weight gradient; with per-tap weight gradients it had measured 1.02x and 0.80x.
EIGEN_CHANNELS = 16
# 3x3 stride-1 convs with at least this many input channels use Winograd F(4x4, 3x3). Forward
# + both gradients, 256->256 at 23x23 b128: Eigen route ~1420 ms -> ~780 ms. Train step,
# alternating processes: ResNet-lite-22 b128 1.51 / 1.52x from 256 channels, then 1.13 /
# 1.15x more from 128; ResNet-lite-11 b128 from 64 instead of 128 0.99 / 1.03x; BasicCNN
# b256 from 64 (its 64->128 at 12x12) 0.94 / 0.99 / 0.97x, from 16 0.70-0.83x.
WINOGRAD_CHANNELS = 128
# The Winograd and Eigen routes start at this many input pixels (batch x height x width);
# smaller convs stay in YNNPACK. ResNet-50 b32 (at most 20,000 per conv) measured 0.80-0.95x
# with the Eigen route and 0.84-0.95x with Winograd from 128 channels.
LARGE_CONV_PIXELS = 32768
# Stride-1 convs with at most this many kernel taps x input channels run forward as a fused
# sum of products (_tap_sum): XLA's convolution runs BasicCNN's 3->16 stem at 100x100 b256 (27
# terms) at 27 GFLOP/s, 82-93 -> 26 ms. MyNet's 7x7/2 grayscale stem (49 terms, strided)
# measured 44-49 -> 54 ms, so it keeps XLA's convolution.
MAX_TAP_SUM_TERMS = 27


def _out_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def tap_slices(x: jax.Array, kh: int, kw: int, stride, padding) -> list[jax.Array]:
    """Per kernel tap, row-major: the [B, out_h, out_w, C] pixels of NHWC ``x`` it sees."""
    batch, height, width, cin = x.shape
    out_h = _out_size(height, kh, stride[0], padding[0])
    out_w = _out_size(width, kw, stride[1], padding[1])
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    return [
        lax.slice(
            xp,
            (0, i, j, 0),
            (batch, i + stride[0] * (out_h - 1) + 1, j + stride[1] * (out_w - 1) + 1, cin),
            (1, stride[0], stride[1], 1),
        )
        for i in range(kh)
        for j in range(kw)
    ]


def _tap_columns(x: jax.Array, kh: int, kw: int, stride, padding) -> jax.Array:
    """[B * out_h * out_w, kh * kw * C]: im2col of NHWC ``x``, tap-major and channel-minor."""
    taps = tap_slices(x, kh, kw, stride, padding)
    return jnp.stack(taps, -2).reshape(-1, kh * kw * x.shape[-1])


def _tap_rows(x: jax.Array, kh: int, kw: int, stride, padding) -> jax.Array:
    """[kh * kw * C, B * out_h * out_w]: per kernel tap and input channel, the input pixels
    that tap sees, from channel-major ``x`` so each row is one contiguous strided slice."""
    batch, height, width, cin = x.shape
    out_h = _out_size(height, kh, stride[0], padding[0])
    out_w = _out_size(width, kw, stride[1], padding[1])
    xt = jnp.pad(x.transpose(3, 0, 1, 2), ((0, 0), (0, 0), padding[0], padding[1]))
    taps = [
        lax.slice(
            xt,
            (0, 0, i, j),
            (cin, batch, i + stride[0] * (out_h - 1) + 1, j + stride[1] * (out_w - 1) + 1),
            (1, 1, stride[0], stride[1]),
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.stack(taps).reshape(kh * kw * cin, -1)


def _is_large(x_shape) -> bool:
    """At least LARGE_CONV_PIXELS input pixels (batch x height x width)."""
    return x_shape[0] * x_shape[1] * x_shape[2] >= LARGE_CONV_PIXELS


def _use_eigen(x_shape, w_shape, stride, padding) -> bool:
    """Stride 1, at least EIGEN_CHANNELS inputs and LARGE_CONV_PIXELS input pixels, and padding
    that keeps the output no larger than the input."""
    kernel = w_shape[:2]
    return (
        stride == (1, 1)
        and w_shape[2] >= EIGEN_CHANNELS
        and _is_large(x_shape)
        and all(min(p) >= 0 and sum(p) < k for p, k in zip(padding, kernel))
    )


def _use_winograd(x_shape, w_shape, stride, padding) -> bool:
    """3x3, stride 1, at least WINOGRAD_CHANNELS inputs and LARGE_CONV_PIXELS input pixels, each
    pad 0..2, a non-empty output."""
    return (
        w_shape[:2] == (3, 3)
        and stride == (1, 1)
        and w_shape[2] >= WINOGRAD_CHANNELS
        and _is_large(x_shape)
        and all(0 <= p <= 2 for pair in padding for p in pair)
        and min(x_shape[1] + sum(padding[0]), x_shape[2] + sum(padding[1])) >= 3
    )


def _use_tap_sum(w_shape, stride) -> bool:
    kh, kw, cin, _ = w_shape
    return stride == (1, 1) and kh * kw * cin <= MAX_TAP_SUM_TERMS


def _use_im2col(cin: int, cout: int) -> bool:
    return PIXEL_MAJOR_CHANNELS <= cin < MAX_IM2COL_CHANNELS and cout >= MIN_IM2COL_OUTPUTS


def _conv(x, w, stride, padding):
    return lax.conv_general_dilated(x, w, stride, padding, dimension_numbers=NHWC)


def _input_grad(x_shape, w, stride, padding, g):
    """XLA's transposed convolution: the gradient of ``_conv`` with respect to its input."""
    x_spec = jax.ShapeDtypeStruct(x_shape, g.dtype)
    return jax.linear_transpose(lambda x: _conv(x, w, stride, padding), x_spec)(g)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_im2col(x, w, stride, padding):
    return _conv_im2col_fwd(x, w, stride, padding)[0]


def _conv_im2col_fwd(x, w, stride, padding):
    kh, kw, cin, cout = w.shape
    columns = _tap_columns(x, kh, kw, stride, padding)
    batch, height, width, _ = x.shape
    out_shape = (
        batch,
        _out_size(height, kh, stride[0], padding[0]),
        _out_size(width, kw, stride[1], padding[1]),
        cout,
    )
    y = (columns @ w.reshape(-1, cout)).reshape(out_shape)
    return y, (columns, w, x.shape)


def _conv_im2col_bwd(stride, padding, residuals, g):
    columns, w, x_shape = residuals
    g2 = g.reshape(-1, w.shape[-1])
    dw = (g2.T @ columns).T.reshape(w.shape)
    return _input_grad(x_shape, w, stride, padding, g), dw


_conv_im2col.defvjp(_conv_im2col_fwd, _conv_im2col_bwd)


# Stride-1 weight gradients from PIXEL_MAJOR_CHANNELS on. Alone, 3x3 b128 at 23x23, per-tap
# matmuls -> Eigen: 64->128 147 -> 107 ms, 128->128 273 -> 184, 256->256 737 -> 540; BasicCNN
# b256 16->32 at 50x50 221 -> 139. Train step, alternating processes: ResNet-lite-11 b128 +5 /
# +0.2%, BasicCNN b256 +2 / +3 / +17%, ResNet-50 b32 0.98 / 1.00x. BasicCNN's 3-channel stem
# (channel-major tap rows) measured 74 -> 72 ms, plus 40 ms of transposes. The input's
# transpose in two steps instead of one, per-op profile of the train step: BasicCNN b256
# 16->32 at 50x50 51.7 -> 21.6 ms, 32->64 21.6 -> 15.9, 64->128 10.7 -> 5.8; ResNet-lite-11
# b128 64->128 at 23x23 19.8 -> 17.9; BasicCNN train step 1.03x (median of 14 pairs).
def _eigen_wgrad_rows(x_shape, w_shape, stride, padding) -> int | None:
    """Zero rows to append to ``g`` for ``_weight_grad_eigen``, or None where it does not apply
    (strided, negative padding, or XLA would swap the convolution's operands)."""
    _, height, width, _ = x_shape
    (top, bottom), (left, right) = padding
    if (
        stride != (1, 1)
        or w_shape[2] < PIXEL_MAJOR_CHANNELS
        or min(top, bottom, left, right) < 0
        or w_shape[1] == 1
    ):
        return None
    out_h = _out_size(height, w_shape[0], 1, (top, bottom))
    out_w = _out_size(width, w_shape[1], 1, (left, right))
    extra = max(1, height + 1 - out_h)
    # XLA swaps a convolution's operands when its kernel has more spatial elements than its
    # input, not counting a kernel dimension as wide as the input (conv_operand_swapper.cc,
    # hence no k x 1 kernels); the swapped one is window-reversed, which Eigen declines.
    if (out_h + extra) * out_w > height * (width + left + right):
        return None
    return extra


def _weight_grad_eigen(x, padding, g, extra):
    """Stride-1 kernel gradient as one Eigen convolution: the channel-major input [C, H, W, B]
    (batch as features) with the output gradient [OH + extra, OW, B, C_out] as kernel. The
    extra zero rows make the kernel taller than the input, which YNNPACK declines; the input's
    column padding is explicit, inside a conditional, so that XLA neither folds it into the
    window nor swaps the operands (both would leave Eigen's fast path). The input is
    transposed in two steps: [B, H * W * C] -> [H * W * C, B], which reads each cache line of
    ``x`` once, then [H, W, C, B] -> [C, H, W, B], which moves whole rows of B floats. XLA's
    one-step transpose re-reads each line for every channel in it."""
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


def _weight_grad(x, w_shape, stride, padding, g):
    """The kernel gradient: one Eigen convolution where it applies, else matmuls of per-tap
    slices or channel-major rows (module docstring)."""
    kh, kw, cin, cout = w_shape
    extra = _eigen_wgrad_rows(x.shape, w_shape, stride, padding)
    if extra is not None:
        return _weight_grad_eigen(x, padding, g, extra)
    g2 = g.reshape(-1, cout)
    if cin < PIXEL_MAJOR_CHANNELS:
        return (_tap_rows(x, kh, kw, stride, padding) @ g2).reshape(w_shape)
    taps = tap_slices(x, kh, kw, stride, padding)
    if min(cin, cout) >= YNN_WGRAD_CHANNELS:
        g_t = fusion_barrier.stored(g2.T)
        dw_t = [g_t @ tap.reshape(-1, cin) for tap in taps]
        return jnp.stack(dw_t).transpose(0, 2, 1).reshape(w_shape)
    contract_pixels = (((0,), (0,)), ((), ()))
    dw = [lax.dot_general(tap.reshape(-1, cin), g2, contract_pixels) for tap in taps]
    return jnp.stack(dw).reshape(w_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_matmul_wgrad(x, w, stride, padding):
    return _conv(x, w, stride, padding)


def _conv_matmul_wgrad_fwd(x, w, stride, padding):
    return _conv(x, w, stride, padding), (x, w)


def _conv_matmul_wgrad_bwd(stride, padding, residuals, g):
    x, w = residuals
    dw = _weight_grad(x, w.shape, stride, padding, g)
    return _input_grad(x.shape, w, stride, padding, g), dw


_conv_matmul_wgrad.defvjp(_conv_matmul_wgrad_fwd, _conv_matmul_wgrad_bwd)


def _tap_sum(x, w, stride, padding):
    """The convolution as a sum over taps and input channels of a shifted input channel
    [B, OH, OW, 1] times the kernel's row [C_out]; XLA fuses it into one loop. The result
    is kept in memory (``fusion_barrier.stored``): otherwise XLA fuses the products into each
    consumer and recomputes them there (a following max-pool's value, index and backward)."""
    kh, kw, cin, _ = w.shape

    def products(x):
        terms = (
            tap[..., c : c + 1] * w[t // kw, t % kw, c]
            for t, tap in enumerate(tap_slices(x, kh, kw, stride, padding))
            for c in range(cin)
        )
        return functools.reduce(jnp.add, terms)

    return fusion_barrier.stored(x, products)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_tap_sum(x, w, stride, padding):
    return _tap_sum(x, w, stride, padding)


def _conv_tap_sum_fwd(x, w, stride, padding):
    return _tap_sum(x, w, stride, padding), (x, w)


_conv_tap_sum.defvjp(_conv_tap_sum_fwd, _conv_matmul_wgrad_bwd)


def _conv_1x1(x, w, stride, padding):
    x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    return _matmul_1x1(x[:, :: stride[0], :: stride[1], :], w[0, 0])


@jax.custom_vjp
def _matmul_1x1(x, w):
    """``x @ w`` with the weight gradient as ``(g^T @ x)^T`` (module docstring)."""
    return x @ w


def _matmul_1x1_fwd(x, w):
    return x @ w, (x, w)


def _matmul_1x1_bwd(residuals, g):
    x, w = residuals
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    return g @ w.T, (g2.T @ x2).T


_matmul_1x1.defvjp(_matmul_1x1_fwd, _matmul_1x1_bwd)


def _taller(x, w, padding):
    """Stride-1 conv with more output rows than ``x`` has rows (extra ones computed, then
    sliced off when needed)."""
    (top, bottom), columns = padding
    extra = max(0, x.shape[1] + 1 - _out_size(x.shape[1], w.shape[0], 1, (top, bottom)))
    y = lax.conv_general_dilated(
        x, w, (1, 1), ((top, bottom + extra), columns), dimension_numbers=NHWC
    )
    return y[:, : y.shape[1] - extra]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_eigen(x, w, padding):
    return _taller(x, w, padding)


def _conv_eigen_fwd(x, w, padding):
    return _taller(x, w, padding), (x, w)


def _conv_eigen_bwd(padding, residuals, g):
    x, w = residuals
    flipped = w[::-1, ::-1].transpose(0, 1, 3, 2)
    transposed_padding = tuple((k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(padding, w.shape))
    dx = _taller(g, flipped, transposed_padding)
    return dx, _weight_grad(x, w.shape, (1, 1), padding, g)


_conv_eigen.defvjp(_conv_eigen_fwd, _conv_eigen_bwd)


def conv2d(
    x: jax.Array,
    w: jax.Array,
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
) -> jax.Array:
    """NHWC input, HWIO kernel, explicit padding; equal to XLA's convolution and its gradients."""
    stride, padding = tuple(stride), tuple(tuple(p) for p in padding)
    if w.shape[:2] == (1, 1):
        return _conv_1x1(x, w, stride, padding)
    if _use_winograd(x.shape, w.shape, stride, padding):
        return winograd_conv.conv3x3(x, w, padding)
    if _use_eigen(x.shape, w.shape, stride, padding):
        return _conv_eigen(x, w, padding)
    if _use_tap_sum(w.shape, stride):
        return _conv_tap_sum(x, w, stride, padding)
    if _use_im2col(*w.shape[2:]):
        return _conv_im2col(x, w, stride, padding)
    return _conv_matmul_wgrad(x, w, stride, padding)
