"""Shared building blocks: every conv, batch norm and max-pool of the model zoo goes through here.

Conventions follow PyTorch so that models match their reference implementations:
explicit symmetric padding ``k // 2`` (not ``'SAME'``), Kaiming-normal fan_out conv init,
BatchNorm with momentum 0.1 (torch convention) and epsilon 1e-5, max-pooling padded with -inf.
All tensors are NHWC.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flaxcnn import ops

# torch.nn.init.kaiming_normal_(mode='fan_out', nonlinearity='relu'): N(0, 2 / (out * kh * kw)).
kaiming_normal_fan_out = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int | None = None) -> int:
    """Spatial output size of a conv/pool (PyTorch floor formula); padding defaults to kernel // 2."""
    if padding is None:
        padding = kernel // 2
    return (size + 2 * padding - kernel) // stride + 1


def pair(size: int | Sequence[int]) -> tuple[int, int]:
    """Normalise an image size given as ``S`` or ``(H, W)`` to ``(H, W)``."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def conv(
    in_features: int,
    out_features: int,
    kernel: int,
    stride: int = 1,
    *,
    use_bias: bool = False,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """Square 2-D conv with PyTorch-style padding ``kernel // 2`` and Kaiming-normal fan_out init."""
    pad = kernel // 2
    return nnx.Conv(
        in_features,
        out_features,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        kernel_init=kaiming_normal_fan_out,
        conv_general_dilated=ops.conv_general_dilated,
        rngs=rngs,
    )


def batch_norm(features: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """BatchNorm over the channel axis with scale 1, bias 0, torch momentum 0.1 and epsilon 1e-5."""
    return nnx.BatchNorm(
        features,
        momentum=0.9,
        epsilon=1e-5,
        scale_init=nnx.initializers.ones_init(),
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )


def linear(in_features: int, out_features: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    """Fully connected layer with bias and Flax's default init."""
    return nnx.Linear(in_features, out_features, rngs=rngs)


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """2-D max-pool over NHWC with PyTorch semantics: pad with -inf, floor the output size."""
    return ops.max_pool(x, window, stride, padding)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes of an NHWC tensor: (N, H, W, C) -> (N, C)."""
    return jnp.mean(x, axis=(1, 2))


def flatten(x: jax.Array) -> jax.Array:
    """Flatten all but the batch axis (NHWC order)."""
    return x.reshape(x.shape[0], -1)


class ConvBN(nnx.Module):
    """Conv (no bias) followed by BatchNorm, without activation."""

    def __init__(
        self, in_features: int, out_features: int, kernel: int, stride: int = 1, *, rngs: nnx.Rngs
    ):
        self.conv = conv(in_features, out_features, kernel, stride, rngs=rngs)
        self.bn = batch_norm(out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


class Stem(nnx.Module):
    """ResNet stem: conv 7x7/2 -> BN -> ReLU -> max-pool 3x3/2 pad 1 (spatial size /4)."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.conv_bn = ConvBN(in_features, out_features, 7, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return max_pool(jax.nn.relu(self.conv_bn(x)), 3, 2, 1)

    @staticmethod
    def output_size(size: int) -> int:
        """Spatial output size of the stem for a given input size."""
        return conv_output_size(conv_output_size(size, 7, 2), 3, 2, 1)
