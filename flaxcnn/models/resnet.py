"""ResNet family, structured as torchvision's ResNet (v1.5): one ``ResNet`` class, two block kinds.

Stem (conv 7x7/2 -> BN -> ReLU -> max-pool 3x3/2 pad 1), stages of residual blocks, global
average pool, linear classifier. Each block has a conv 1x1 + BN projection shortcut when its
stride or channel count changes, the identity otherwise; a stage's first block carries the stage
stride (on the 3x3 conv: v1.5). BN scale and bias are trainable (counted), running statistics are
not. The classifier keeps Flax's default init.

A variant is a ``model_args`` dict handed to ``_create_resnet``, as in timm; the caller's factory
kwargs override it, so e.g. ``blocks_per_stage=(2, 2, 2, 2)`` or narrower ``widths`` are config
changes. The lite variants take ``widths`` as (stem width, stage widths...), as MyNet does.
"""

from collections.abc import Sequence

import jax
from flax import nnx

from flaxcnn.models import layers
from flaxcnn.models import register


class ResidualBlock(nnx.Module):
    """ReLU(convs(x) + shortcut(x)): ``conv_bn1``, ``conv_bn2``, ... with a ReLU between them.

    A subclass names its conv kernels, which of them carries the block's stride and the channel
    expansion of the last one. The shortcut is a conv 1x1 + BN projection when the block changes
    the stride or the channel count, the identity otherwise. ``zero_init_residual`` starts the
    last BN scale at 0, so the block starts as its shortcut.
    """

    kernels: tuple[int, ...]
    strided: int  # index of the conv that carries the stride
    expansion: int

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
        last = len(self.kernels) - 1
        for index, kernel in enumerate(self.kernels):
            conv_bn = layers.ConvBN(
                in_features if index == 0 else width,
                out_features if index == last else width,
                kernel,
                stride if index == self.strided else 1,
                zero_scale=zero_init_residual and index == last,
                rngs=rngs,
            )
            setattr(self, f'conv_bn{index + 1}', conv_bn)
        if stride == 1 and in_features == out_features:
            self.shortcut = None
        else:
            self.shortcut = layers.ConvBN(in_features, out_features, 1, stride, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x if self.shortcut is None else self.shortcut(x)
        y = x
        for index in range(len(self.kernels)):
            if index:
                y = jax.nn.relu(y)
            y = getattr(self, f'conv_bn{index + 1}')(y)
        return jax.nn.relu(y + residual)


class BasicBlock(ResidualBlock):
    """conv 3x3 (stride) -> BN -> ReLU -> conv 3x3 -> BN, + shortcut, ReLU."""

    kernels = (3, 3)
    strided = 0
    expansion = 1


class Bottleneck(ResidualBlock):
    """1x1 -> BN -> ReLU -> 3x3 (stride) -> BN -> ReLU -> 1x1 (x4) -> BN, + shortcut, ReLU."""

    kernels = (1, 3, 1)
    strided = 1
    expansion = 4


class ResNet(nnx.Module):
    """Stem -> stages of ``block``s -> global average pool -> linear classifier.

    Stage ``i`` has ``blocks_per_stage[i]`` blocks of width ``widths[i]``; every stage after the
    first starts with stride ``stage_stride``.
    """

    HEAD = ('head',)  # the classifier (transfer learning re-initialises or trains it apart)
    INPUT_CONV = ('stem', 'conv_bn', 'conv')  # the conv that sees the image's channels

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int | Sequence[int],
        block: type[ResidualBlock],
        blocks_per_stage: Sequence[int],
        widths: Sequence[int],
        stem_width: int,
        stage_stride: int,
        zero_init_residual: bool = False,
        rngs: nnx.Rngs,
    ):
        if len(blocks_per_stage) != len(widths) or not widths or min(blocks_per_stage) < 1:
            raise ValueError(
                'blocks_per_stage and widths need one entry (>= 1 block) per stage, got '
                f'{blocks_per_stage!r} and {widths!r}'
            )
        strides = [1] + [stage_stride] * (len(widths) - 1)
        layers.feature_map_size(
            image_size, (*layers.Stem.steps, *(layers.conv_step(3, s) for s in strides))
        )
        self.stem = layers.Stem(in_channels, stem_width, rngs=rngs)
        blocks = []
        in_features = stem_width
        for depth, width, stride in zip(blocks_per_stage, widths, strides):
            for index in range(depth):
                blocks.append(
                    block(
                        in_features,
                        width,
                        stride if index == 0 else 1,
                        zero_init_residual=zero_init_residual,
                        rngs=rngs,
                    )
                )
                in_features = width * block.expansion
        self.blocks = nnx.List(blocks)
        self.head = layers.linear(in_features, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | jax.Array | None = None) -> jax.Array:
        del rngs  # no stochastic layers; accepted for the common model call signature
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(layers.global_avg_pool(x))


def _create_resnet(model_args: dict, **kwargs) -> ResNet:
    """The ResNet a variant's ``model_args`` describe; the caller's kwargs take precedence."""
    return ResNet(**{**model_args, **kwargs})


def _lite_args(blocks: int, widths: Sequence[int]) -> dict:
    """``model_args`` of a resnet_lite: ``widths`` (stem, stages...), stride-1 BasicBlock stages."""
    if len(widths) < 2:
        raise ValueError(f'widths needs a stem width and at least one stage width, got {widths!r}')
    return dict(
        block=BasicBlock,
        blocks_per_stage=(blocks,) * (len(widths) - 1),
        stem_width=widths[0],
        widths=tuple(widths[1:]),
        stage_stride=1,
    )


@register('resnet_lite_11')
def resnet_lite_11(*, widths: Sequence[int] = (64, 128, 256), **kwargs) -> ResNet:
    """ResNet-lite with one BasicBlock per stage (1,165,812 params at 52 cls/1 ch)."""
    return _create_resnet(_lite_args(1, widths), **kwargs)


@register('resnet_lite_22')
def resnet_lite_22(*, widths: Sequence[int] = (64, 128, 256), **kwargs) -> ResNet:
    """ResNet-lite with two BasicBlocks per stage (2,641,908 params at 52 cls/1 ch)."""
    return _create_resnet(_lite_args(2, widths), **kwargs)


@register('resnet50')
def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (torchvision v1.5 layout; 25,557,032 params at 1000 cls/3 ch)."""
    model_args = dict(
        block=Bottleneck,
        blocks_per_stage=(3, 4, 6, 3),
        widths=(64, 128, 256, 512),
        stem_width=64,
        stage_stride=2,
    )
    return _create_resnet(model_args, **kwargs)
