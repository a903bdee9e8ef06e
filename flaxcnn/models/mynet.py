"""MyNet family: ResNet stem, stride-2 residual stages, flatten + linear head.

The head flattens the final feature map, so its input size depends on the image size: NNX
creates parameters eagerly, hence the factories take ``image_size`` (default 90) and derive
the flatten size with the PyTorch conv/pool output-size formula.
"""

from collections.abc import Sequence

import jax
from flax import nnx

from flaxcnn.models import register
from flaxcnn.models import layers


class DownsampleStage(nnx.Module):
    """Stride-2 residual stage: [conv 3x3/2 -> BN] + [conv 1x1/2 -> BN] -> ReLU."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.main = layers.ConvBN(in_features, out_features, 3, 2, rngs=rngs)
        self.shortcut = layers.ConvBN(in_features, out_features, 1, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.main(x) + self.shortcut(x))

    @staticmethod
    def output_size(size: int) -> int:
        """Spatial output size of the stage for a given input size."""
        return layers.conv_output_size(size, 3, 2)


class MyNet(nnx.Module):
    """Stem -> DownsampleStages -> flatten -> dropout -> linear classifier."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        widths: Sequence[int],
        dropout: float,
        image_size: int | Sequence[int],
        rngs: nnx.Rngs,
    ):
        if len(widths) < 2:
            raise ValueError(
                f'widths needs a stem width and at least one stage width, got {widths!r}'
            )
        self.stem = layers.Stem(in_channels, widths[0], rngs=rngs)
        self.stages = nnx.List(
            [DownsampleStage(cin, cout, rngs=rngs) for cin, cout in zip(widths[:-1], widths[1:])]
        )
        height, width = (layers.Stem.output_size(s) for s in layers.pair(image_size))
        for _ in self.stages:
            height, width = DownsampleStage.output_size(height), DownsampleStage.output_size(width)
        self.dropout = nnx.Dropout(dropout)
        self.head = layers.linear(height * width * widths[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | jax.Array | None = None) -> jax.Array:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = self.dropout(layers.flatten(x), rngs=rngs)
        return self.head(x)


@register('mynet_v1')
def mynet_v1(**kwargs) -> nnx.Module:
    """MyNet v1: 64-wide stem, one 128-wide stage, no dropout (1,044,212 params at 52 cls/1 ch/90 px)."""
    return MyNet(**{'widths': (64, 128), 'dropout': 0.0, **kwargs})


@register('mynet_v2')
def mynet_v2(**kwargs) -> nnx.Module:
    """MyNet v2: 32-wide stem, 64/128 stages, dropout 0.4 (344,468 params at 52 cls/1 ch/90 px)."""
    return MyNet(**{'widths': (32, 64, 128), 'dropout': 0.4, **kwargs})
