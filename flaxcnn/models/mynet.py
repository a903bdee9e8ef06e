"""MyNet family: ResNet stem, stride-2 residual stages, flatten + linear head.

The head flattens the final feature map, so its input size depends on the image size: NNX
creates parameters eagerly, hence the factories take ``image_size`` (default 90) and derive
the flatten size from the model's spatial steps (``layers.feature_map_size``).
"""

from collections.abc import Sequence

import jax
from flax import nnx

from flaxcnn.models import register
from flaxcnn.models import layers


class DownsampleStage(nnx.Module):
    """Stride-2 residual stage: [conv 3x3/2 -> BN] + [conv 1x1/2 -> BN] -> ReLU."""

    steps = (layers.conv_step(3, 2),)  # its spatial steps (the shortcut's 1x1/2 agrees)

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.main = layers.ConvBN(in_features, out_features, 3, 2, rngs=rngs)
        self.shortcut = layers.ConvBN(in_features, out_features, 1, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.main(x) + self.shortcut(x))


class MyNet(nnx.Module):
    """Stem -> DownsampleStages -> flatten -> dropout -> linear classifier."""

    HEAD = ('head',)  # the classifier (transfer learning re-initialises or trains it apart)
    INPUT_CONV = ('stem', 'conv_bn', 'conv')  # the conv that sees the image's channels

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
        height, width = layers.feature_map_size(
            image_size, (*layers.Stem.steps, *DownsampleStage.steps * (len(widths) - 1))
        )
        self.stem = layers.Stem(in_channels, widths[0], rngs=rngs)
        self.stages = nnx.List(
            [DownsampleStage(cin, cout, rngs=rngs) for cin, cout in zip(widths[:-1], widths[1:])]
        )
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
