"""ResNet-lite family: ResNet stem, stride-1 stages of BasicBlocks, global average pool + linear head."""

from collections.abc import Sequence

import jax
from flax import nnx

from flaxcnn.models import register
from flaxcnn.models import layers


class BasicBlock(nnx.Module):
    """ResNet basic block: conv3x3 -> BN -> ReLU -> conv3x3 -> BN, + shortcut, ReLU.

    The shortcut is a 1x1 conv + BN projection when the stride or channel count changes,
    the identity otherwise.
    """

    def __init__(self, in_features: int, out_features: int, stride: int = 1, *, rngs: nnx.Rngs):
        self.conv_bn1 = layers.ConvBN(in_features, out_features, 3, stride, rngs=rngs)
        self.conv_bn2 = layers.ConvBN(out_features, out_features, 3, 1, rngs=rngs)
        if stride != 1 or in_features != out_features:
            self.shortcut = layers.ConvBN(in_features, out_features, 1, stride, rngs=rngs)
        else:
            self.shortcut = None

    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x if self.shortcut is None else self.shortcut(x)
        y = self.conv_bn2(jax.nn.relu(self.conv_bn1(x)))
        return jax.nn.relu(y + residual)


class ResNetLite(nnx.Module):
    """Stem -> stages of stride-1 BasicBlocks -> global average pool -> linear classifier."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        blocks_per_stage: int,
        widths: Sequence[int],
        rngs: nnx.Rngs,
        image_size: int | Sequence[int] | None = None,
    ):
        del image_size  # global average pooling makes the head independent of the image size
        if len(widths) < 2:
            raise ValueError(
                f'widths needs a stem width and at least one stage width, got {widths!r}'
            )
        self.stem = layers.Stem(in_channels, widths[0], rngs=rngs)
        blocks = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            blocks.append(BasicBlock(cin, cout, rngs=rngs))
            blocks.extend(BasicBlock(cout, cout, rngs=rngs) for _ in range(blocks_per_stage - 1))
        self.blocks = nnx.List(blocks)
        self.head = layers.linear(widths[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | jax.Array | None = None) -> jax.Array:
        del rngs  # no stochastic layers; accepted for the common model call signature
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(layers.global_avg_pool(x))


@register('resnet_lite_11')
def resnet_lite_11(**kwargs) -> nnx.Module:
    """ResNet-lite with one BasicBlock per stage (1,165,812 params at 52 cls/1 ch)."""
    return ResNetLite(blocks_per_stage=1, **{'widths': (64, 128, 256), **kwargs})


@register('resnet_lite_22')
def resnet_lite_22(**kwargs) -> nnx.Module:
    """ResNet-lite with two BasicBlocks per stage (2,641,908 params at 52 cls/1 ch)."""
    return ResNetLite(blocks_per_stage=2, **{'widths': (64, 128, 256), **kwargs})
