"""3x3 stride-1 convolution by Winograd's minimal filtering algorithm F(4x4, 3x3).

The output is computed in 4x4 tiles, each from a 6x6 input tile: 36 matmuls of the
transformed input tiles ``[tiles, C_in]`` with the transformed kernel ``[C_in, C_out]``
replace the convolution's 9 taps per output pixel, 4x fewer multiply-adds. The transforms
are sums of strided slices that XLA fuses. Same convolution as ``lax.conv_general_dilated``,
exact in real arithmetic; in fp32 its rounding error, relative to the output's largest value,
is larger than a direct convolution's (ops/README.md). Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016.

Gradients: the input gradient is the same algorithm on the output gradient with the flipped
kernel; the kernel gradient reuses the forward pass's transformed input tiles, with the
output gradient's tiles taken through the transposed output transform (36 matmuls).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from flaxcnn.ops import fusion_barrier
from flaxcnn.ops import geometry

TILE = 4  # output pixels per tile side
ALPHA = TILE + 2  # input pixels per tile side
# Interpolation points 0, 1, -1, 2, -2 and infinity.
_BT = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ]
)
_G = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ]
)
_AT = np.array(
    [
        [1, 1, 1, 1, 1, 0],
        [0, 1, -1, 2, -2, 0],
        [0, 1, 1, 4, 4, 0],
        [0, 1, -1, 8, -8, 1],
    ]
)


def _combine(matrix: np.ndarray, parts: list[jax.Array]) -> list[jax.Array]:
    """``matrix @ parts`` for a small constant matrix: one sum of scaled arrays per row."""
    return [sum(float(c) * p if c != 1 else p for c, p in zip(row, parts) if c) for row in matrix]


def _tiles(out_size: int) -> int:
    return -(-out_size // TILE)


def _input_tiles(x, padding, out_h, out_w) -> list[jax.Array]:
    """The 36 transformed input tiles ``B^T d B``, each ``[B * tiles_h * tiles_w, C]``,
    row-major over (u, v)."""
    th, tw = _tiles(out_h), _tiles(out_w)
    (top, _), (left, _) = padding
    height, width = x.shape[1:3]
    pads = (
        (0, 0),
        (top, TILE * th + 2 - height - top),
        (left, TILE * tw + 2 - width - left),
        (0, 0),
    )

    def row_transform(x):
        xp = jnp.pad(x, pads)
        return _combine(_BT, [xp[:, a : a + TILE * th : TILE] for a in range(ALPHA)])

    # The row transform (with the pad) is stored: fused into the column transform, XLA
    # would recompute it for each of the 36 tiles.
    rows = fusion_barrier.stored(x, row_transform)
    tiles = []
    for row in rows:
        columns = [row[:, :, b : b + TILE * tw : TILE] for b in range(ALPHA)]
        tiles.extend(t.reshape(-1, x.shape[-1]) for t in _combine(_BT, columns))
    return tiles


def _kernel_tiles(w) -> jax.Array:
    """``G w G^T``: [36, C_in, C_out]."""
    g = jnp.asarray(_G, w.dtype)
    return jnp.einsum('ua,abio,vb->uvio', g, w, g).reshape(ALPHA * ALPHA, *w.shape[2:])


def _output(products, batch, out_h, out_w) -> jax.Array:
    """``A^T M A`` of the 36 tile products, interleaved into [B, out_h, out_w, C_out]."""
    th, tw = _tiles(out_h), _tiles(out_w)
    cout = products[0].shape[-1]
    m = [p.reshape(batch, th, tw, cout) for p in products]
    # Stored, as in _input_tiles: XLA would otherwise fuse the whole transform into one loop
    # that recomputes it per output pixel.
    by_v = fusion_barrier.stored(m, lambda m: [_combine(_AT, m[v::ALPHA]) for v in range(ALPHA)])
    rows = [jnp.stack(_combine(_AT, [by_v[v][i] for v in range(ALPHA)]), 3) for i in range(TILE)]
    y = jnp.stack(rows, 2).reshape(batch, TILE * th, TILE * tw, cout)
    return y[:, :out_h, :out_w]


def _output_transposed(g) -> list[jax.Array]:
    """The transpose of ``_output``: the 36 tiles ``A g A^T`` of the output gradient, each
    ``[B * tiles_h * tiles_w, C_out]``."""
    batch, out_h, out_w, cout = g.shape
    th, tw = _tiles(out_h), _tiles(out_w)
    gp = jnp.pad(g, ((0, 0), (0, TILE * th - out_h), (0, TILE * tw - out_w), (0, 0)))
    gp = gp.reshape(batch, th, TILE, tw, TILE, cout)
    a = _AT.T
    by_u = _combine(a, [gp[:, :, i] for i in range(TILE)])  # [u]: [B, th, tw, TILE, C]
    return [
        t.reshape(-1, cout)
        for rows in by_u
        for t in _combine(a, [rows[:, :, :, j] for j in range(TILE)])
    ]


def _forward(x, w, padding):
    out_h, out_w = geometry.output_hw(*x.shape[1:3], (3, 3), (1, 1), padding)
    tiles = _input_tiles(x, padding, out_h, out_w)
    kernel = _kernel_tiles(w)
    products = [t @ kernel[k] for k, t in enumerate(tiles)]
    return _output(products, x.shape[0], out_h, out_w), tiles


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x: jax.Array, w: jax.Array, padding) -> jax.Array:
    """NHWC ``x``, [3, 3, C_in, C_out] ``w``, stride 1, padding ((top, bottom), (left, right))
    with each side in 0..2."""
    return _forward(x, w, padding)[0]


def _conv3x3_fwd(x, w, padding):
    y, tiles = _forward(x, w, padding)
    return y, (tiles, w)


def _conv3x3_bwd(padding, residuals, g):
    tiles, w = residuals
    flipped = w[::-1, ::-1].transpose(0, 1, 3, 2)
    transposed = tuple((2 - lo, 2 - hi) for lo, hi in padding)
    dx = _forward(g, flipped, transposed)[0]
    g_tiles = _output_transposed(g)
    d_kernel = jnp.stack([t.T @ gt for t, gt in zip(tiles, g_tiles)])
    gm = jnp.asarray(_G, w.dtype)
    d_kernel = d_kernel.reshape(ALPHA, ALPHA, *w.shape[2:])
    dw = jnp.einsum('ua,uvio,vb->abio', gm, d_kernel, gm)
    return dx, dw


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
