"""ResNet family with bottleneck blocks, structured as torchvision's ResNet (v1.5).

Stem (conv 7x7/2 -> BN -> ReLU -> max-pool 3x3/2 pad 1), stages of bottleneck blocks whose
first block carries the stage stride on its 3x3 conv (v1.5) and a conv 1x1 + BN projection
shortcut, global average pool, linear classifier. ``blocks_per_stage`` and ``widths`` are
kwargs, so bottleneck variants (e.g. (2, 2, 2, 2), or narrower stages) are config changes.
BN scale and bias are trainable (counted), running statistics are not: resnet50 has
25,557,032 params at 1000 classes like torchvision's. The classifier keeps Flax's default init.
"""

from collections.abc import Sequence

import jax
from flax import nnx

from flaxcnn.models import register
from flaxcnn.models import layers


class Bottleneck(nnx.Module):
    """1x1 -> BN -> ReLU -> 3x3 (stride) -> BN -> ReLU -> 1x1 (x4) -> BN, + shortcut, ReLU.

    The shortcut is a 1x1 conv + BN projection when the stride or channel count changes, the
    identity otherwise. ``zero_init_residual`` starts the last BN scale at 0, so the block
    starts as its shortcut.
    """

    expansion = 4

    def __init__(
        self,
        in_features: int,
        width: int,
        stride: int = 1,
        *,
        zero_init_residual: bool = False,
        rngs: nnx.Rngs,
    ):
        out_features = width * self.expansion
        self.conv_bn1 = layers.ConvBN(in_features, width, 1, rngs=rngs)
        self.conv_bn2 = layers.ConvBN(width, width, 3, stride, rngs=rngs)
        self.conv_bn3 = layers.ConvBN(
            width, out_features, 1, zero_scale=zero_init_residual, rngs=rngs
        )
        if stride != 1 or in_features != out_features:
            self.shortcut = layers.ConvBN(in_features, out_features, 1, stride, rngs=rngs)
        else:
            self.shortcut = None

    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x if self.shortcut is None else self.shortcut(x)
        y = jax.nn.relu(self.conv_bn1(x))
        y = jax.nn.relu(self.conv_bn2(y))
        return jax.nn.relu(self.conv_bn3(y) + residual)


class ResNet(nnx.Module):
    """Stem -> stages of Bottlenecks (stride 2 from the second stage) -> GAP -> linear."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        blocks_per_stage: Sequence[int],
        widths: Sequence[int],
        stem_width: int,
        zero_init_residual: bool,
        rngs: nnx.Rngs,
    ):
        if len(blocks_per_stage) != len(widths) or not widths or min(blocks_per_stage) < 1:
            raise ValueError(
                'blocks_per_stage and widths need one entry (>= 1 block) per stage, got '
                f'{blocks_per_stage!r} and {widths!r}'
            )
        self.stem = layers.Stem(in_channels, stem_width, rngs=rngs)
        blocks = []
        in_features = stem_width
        for stage, (depth, width) in enumerate(zip(blocks_per_stage, widths)):
            for index in range(depth):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(
                    Bottleneck(
                        in_features,
                        width,
                        stride,
                        zero_init_residual=zero_init_residual,
                        rngs=rngs,
                    )
                )
                in_features = width * Bottleneck.expansion
        self.blocks = nnx.List(blocks)
        self.head = layers.linear(in_features, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | jax.Array | None = None) -> jax.Array:
        del rngs  # no stochastic layers; accepted for the common model call signature
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(layers.global_avg_pool(x))


@register('resnet50')
def resnet50(
    *,
    num_classes: int,
    in_channels: int,
    rngs: nnx.Rngs,
    image_size: int | Sequence[int] = 224,
    blocks_per_stage: Sequence[int] = (3, 4, 6, 3),
    widths: Sequence[int] = (64, 128, 256, 512),
    stem_width: int = 64,
    zero_init_residual: bool = False,
) -> nnx.Module:
    """ResNet-50 (torchvision v1.5 layout; 25,557,032 params at 1000 cls/3 ch)."""
    del image_size  # global average pooling makes the head independent of the image size
    return ResNet(
        num_classes=num_classes,
        in_channels=in_channels,
        blocks_per_stage=blocks_per_stage,
        widths=widths,
        stem_width=stem_width,
        zero_init_residual=zero_init_residual,
        rngs=rngs,
    )
