"""ProxylessNAS: the network ProxylessNAS found for GPU latency (Cai et al., ICLR 2019).

Stem conv 3x3/2 -> BN -> ReLU6, a chain of MBConv (inverted residual) blocks, conv 1x1 -> BN ->
ReLU6, global average pool, dropout, linear. The block chain is data: ``PROXYLESS_GPU_BLOCKS``
lists one ``MBConvSpec`` per block and the model is built from whatever spec sequence it is
given (``blocks=`` kwarg), so a variant is a config change. The searched net's "skip" slots are
identity blocks, hence simply absent from the list.

Matches the official ``proxyless_gpu`` (7,119,848 params, 465.3M multiply-adds at 1000
classes and 224x224): convs without bias, depthwise padding ``k // 2``, BN epsilon 1e-3 and
momentum 0.1, and dropout 0.0 before the classifier (the official constructor's default).
Convs use the zoo's Kaiming-normal fan_out init (the official 'he_fout'); the classifier keeps
Flax's default init.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
from flax import nnx

from flaxcnn.models import register
from flaxcnn.models import layers

BN_EPSILON = 1e-3


class MBConvSpec(NamedTuple):
    """One MBConv block: output channels, depthwise kernel, expansion ratio, depthwise stride."""

    out_channels: int
    kernel: int
    expand: int
    stride: int = 1


# The searched GPU architecture. Per stage: (out channels, first stride, four slots of
# (kernel, expand) or skip); the first slot carries the stride, skips are left out.
PROXYLESS_GPU_BLOCKS = (
    MBConvSpec(24, 3, 1),  # the fixed first block
    # (32, 2, [(5, 3), skip, skip, skip])
    MBConvSpec(32, 5, 3, 2),
    # (56, 2, [(7, 3), skip, skip, (3, 3)])
    MBConvSpec(56, 7, 3, 2),
    MBConvSpec(56, 3, 3),
    # (112, 2, [(7, 6), skip, skip, (5, 3)])
    MBConvSpec(112, 7, 6, 2),
    MBConvSpec(112, 5, 3),
    # (128, 1, [(5, 6), skip, (3, 3), (5, 3)])
    MBConvSpec(128, 5, 6),
    MBConvSpec(128, 3, 3),
    MBConvSpec(128, 5, 3),
    # (256, 2, [(7, 6), (7, 6), (7, 6), (5, 6)])
    MBConvSpec(256, 7, 6, 2),
    MBConvSpec(256, 7, 6),
    MBConvSpec(256, 7, 6),
    MBConvSpec(256, 5, 6),
    # (432, 1, [(7, 6)])
    MBConvSpec(432, 7, 6),
)


class ConvBNReLU6(nnx.Module):
    """Conv (no bias) -> BN (epsilon 1e-3) -> ReLU6."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel: int,
        stride: int = 1,
        *,
        groups: int = 1,
        rngs: nnx.Rngs,
    ):
        self.conv_bn = layers.ConvBN(
            in_features, out_features, kernel, stride, groups=groups, epsilon=BN_EPSILON, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu6(self.conv_bn(x))


class MBConv(nnx.Module):
    """MBConv (inverted residual) block built from an ``MBConvSpec``.

    [1x1 expand -> BN -> ReLU6] -> kxk depthwise (carries the stride, padding k // 2) -> BN ->
    ReLU6 -> 1x1 project -> BN, plus the identity when the stride is 1 and the channels match.
    The expansion conv is left out when the expansion ratio is 1.
    """

    def __init__(self, in_features: int, spec: MBConvSpec, *, rngs: nnx.Rngs):
        hidden = in_features * spec.expand
        if spec.expand == 1:
            self.expand = None
        else:
            self.expand = ConvBNReLU6(in_features, hidden, 1, rngs=rngs)
        self.depthwise = ConvBNReLU6(
            hidden, hidden, spec.kernel, spec.stride, groups=hidden, rngs=rngs
        )
        self.project = layers.ConvBN(hidden, spec.out_channels, 1, epsilon=BN_EPSILON, rngs=rngs)
        self.residual = spec.stride == 1 and in_features == spec.out_channels

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class ProxylessNAS(nnx.Module):
    """Stem -> MBConv blocks from specs -> conv 1x1 -> GAP -> dropout -> linear."""

    HEAD = ('head',)  # the classifier (transfer learning re-initialises or trains it apart)
    INPUT_CONV = ('stem', 'conv_bn', 'conv')  # the conv that sees the image's channels

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        blocks: Sequence[MBConvSpec],
        stem_channels: int,
        head_channels: int,
        dropout: float,
        image_size: int | Sequence[int],
        rngs: nnx.Rngs,
    ):
        blocks = [MBConvSpec(*item) for item in blocks]  # plain tuples work too
        layers.feature_map_size(
            image_size,
            (layers.conv_step(3, 2), *(layers.conv_step(b.kernel, b.stride) for b in blocks)),
        )
        self.stem = ConvBNReLU6(in_channels, stem_channels, 3, 2, rngs=rngs)
        mbconvs = []
        in_features = stem_channels
        for spec in blocks:
            mbconvs.append(MBConv(in_features, spec, rngs=rngs))
            in_features = spec.out_channels
        self.blocks = nnx.List(mbconvs)
        self.head_conv = ConvBNReLU6(in_features, head_channels, 1, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        self.head = layers.linear(head_channels, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | jax.Array | None = None) -> jax.Array:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = layers.global_avg_pool(self.head_conv(x))
        return self.head(self.dropout(x, rngs=rngs))


@register('proxylessnas_gpu')
def proxylessnas_gpu(
    *,
    num_classes: int,
    in_channels: int,
    rngs: nnx.Rngs,
    image_size: int | Sequence[int] = 224,
    blocks: Sequence[MBConvSpec] = PROXYLESS_GPU_BLOCKS,
    stem_channels: int = 40,
    head_channels: int = 1728,
    dropout: float = 0.0,
) -> nnx.Module:
    """ProxylessNAS-GPU built from ``blocks`` (7,119,848 params, 465.3M MACs at 1000 cls/224 px)."""
    return ProxylessNAS(
        num_classes=num_classes,
        in_channels=in_channels,
        blocks=blocks,
        stem_channels=stem_channels,
        head_channels=head_channels,
        dropout=dropout,
        image_size=image_size,
        rngs=rngs,
    )
