"""BasicCNN: four [conv 3x3 with bias -> ReLU -> max-pool 2x2/2] blocks, flatten, MLP head.

A plain VGG-style baseline (3,060,071 params for Fruits-360: 131 classes, 100x100 RGB). The convs
keep the spatial size (stride 1, padding 1) and each max-pool halves it with the floor formula
(100 -> 50 -> 25 -> 12 -> 6), so the flatten size is derived from ``image_size`` as in MyNet
(four pools need at least 16 pixels a side).
Init: convs use the zoo's Kaiming-normal fan_out kernels with zero bias (PyTorch's own default
would be Kaiming-uniform with a=sqrt(5)); both Linear layers are Xavier-uniform with zero bias.
"""

from collections.abc import Sequence

import jax
from flax import nnx

from flaxcnn.models import register
from flaxcnn.models import layers


class ConvReluPool(nnx.Module):
    """Conv 3x3/1 pad 1 with bias -> ReLU -> max-pool 2x2/2."""

    pool = layers.Step(2, 2)
    steps = (layers.conv_step(3), pool)  # its spatial steps: the pool halves, flooring

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.conv = layers.conv(in_features, out_features, 3, use_bias=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return layers.max_pool(jax.nn.relu(self.conv(x)), *self.pool)


class BasicCNN(nnx.Module):
    """ConvReluPool blocks -> flatten -> Linear -> ReLU -> dropout -> Linear classifier."""

    HEAD = ('head',)  # the classifier (transfer learning re-initialises or trains it apart)
    INPUT_CONV = ('blocks', 0, 'conv')  # the conv that sees the image's channels

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        widths: Sequence[int],
        hidden: int,
        dropout: float,
        image_size: int | Sequence[int],
        rngs: nnx.Rngs,
    ):
        if not widths:
            raise ValueError('widths needs at least one block width')
        height, width = layers.feature_map_size(image_size, ConvReluPool.steps * len(widths))
        in_widths = (in_channels, *widths[:-1])
        self.blocks = nnx.List(
            [ConvReluPool(cin, cout, rngs=rngs) for cin, cout in zip(in_widths, widths)]
        )
        self.hidden = layers.linear(height * width * widths[-1], hidden, xavier=True, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        self.head = layers.linear(hidden, num_classes, xavier=True, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | jax.Array | None = None) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        x = jax.nn.relu(self.hidden(layers.flatten(x)))
        return self.head(self.dropout(x, rngs=rngs))


@register('basic_cnn')
def basic_cnn(
    *,
    num_classes: int,
    in_channels: int,
    rngs: nnx.Rngs,
    image_size: int | Sequence[int] = 100,
    widths: Sequence[int] = (16, 32, 64, 128),
    hidden: int = 625,
    dropout: float = 0.5,
) -> nnx.Module:
    """BasicCNN 16/32/64/128, hidden 625, dropout 0.5 (3,060,071 params at 131 cls/3 ch/100 px)."""
    return BasicCNN(
        num_classes=num_classes,
        in_channels=in_channels,
        widths=widths,
        hidden=hidden,
        dropout=dropout,
        image_size=image_size,
        rngs=rngs,
    )
