"""Shared building blocks: every conv, batch norm and max-pool of the model zoo goes through here.

Conventions follow PyTorch so that models match their reference implementations:
explicit symmetric padding ``k // 2`` (not ``'SAME'``), Kaiming-normal fan_out conv init,
BatchNorm with momentum 0.1 (torch convention) and epsilon 1e-5, max-pooling padded with -inf.
All tensors are NHWC.
"""

import itertools
import numbers
import operator
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from flaxcnn import ops
from flaxcnn.ops import geometry

# torch.nn.init.kaiming_normal_(mode='fan_out', nonlinearity='relu'): N(0, 2 / (out * kh * kw)).
kaiming_normal_fan_out = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# torch.nn.init.xavier_uniform_: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
xavier_uniform = nnx.initializers.xavier_uniform()


class Step(NamedTuple):
    """One conv or pool along a spatial axis, as ``geometry.output_size`` takes it."""

    kernel: int
    stride: int = 1
    padding: int = 0


def conv_step(kernel: int, stride: int = 1) -> Step:
    """The spatial step of ``conv(..., kernel, stride)``: padding ``kernel // 2``."""
    return Step(kernel, stride, kernel // 2)


def pair(size: int | Sequence[int]) -> tuple[int, int]:
    """Normalise an image size given as ``S`` or ``(H, W)`` of positive ints to ``(H, W)``."""
    try:
        height, width = (size, size) if isinstance(size, numbers.Integral) else size
        height, width = operator.index(height), operator.index(width)
    except (TypeError, ValueError):
        height = width = 0
    if min(height, width) < 1:
        raise ValueError(f'image_size must be S or (H, W) of positive ints, got {size!r}')
    return height, width


def feature_map_size(image_size: int | Sequence[int], steps: Iterable[Step]) -> tuple[int, int]:
    """(H, W) of the feature map an image of ``image_size`` leaves after the convs and pools
    ``steps``: what a flatten head is sized from and what every model validates its image with.

    An image too small to keep at least one pixel through ``steps`` is an error that names the
    minimum size.
    """
    steps = tuple(steps)

    def through(size: int) -> int:
        for step in steps:
            size = geometry.output_size(size, *step)
        return size

    height, width = (through(size) for size in pair(image_size))
    if min(height, width) < 1:
        minimum = next(size for size in itertools.count(1) if through(size) >= 1)
        raise ValueError(
            f'image_size {image_size!r} is too small: the downsampling needs at least '
            f'{minimum}x{minimum} pixels'
        )
    return height, width


def conv(
    in_features: int,
    out_features: int,
    kernel: int,
    stride: int = 1,
    *,
    use_bias: bool = False,
    groups: int = 1,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """Square 2-D conv with PyTorch-style padding ``kernel // 2`` and Kaiming-normal fan_out init.

    ``groups`` is the feature group count (torch's ``groups``): ``groups == in_features ==
    out_features`` is a depthwise conv. The bias, if any, starts at zero.
    """
    pad = conv_step(kernel, stride).padding
    return nnx.Conv(
        in_features,
        out_features,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        feature_group_count=groups,
        use_bias=use_bias,
        kernel_init=kaiming_normal_fan_out,
        conv_general_dilated=ops.conv_general_dilated,
        rngs=rngs,
    )


def batch_norm(
    features: int, *, epsilon: float = 1e-5, zero_scale: bool = False, rngs: nnx.Rngs
) -> nnx.BatchNorm:
    """Channel BatchNorm: scale 1 (0 with ``zero_scale``), bias 0, torch momentum 0.1, eps 1e-5."""
    return BatchNorm(
        features,
        momentum=0.9,
        epsilon=epsilon,
        scale_init=nnx.initializers.zeros_init() if zero_scale else nnx.initializers.ones_init(),
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )


class BatchNorm(nnx.BatchNorm):
    """``nnx.BatchNorm`` over NHWC (same variables, same math) whose training-mode pass is
    ``ops.batch_norm``: a closed-form backward pass with the fast ops."""

    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        if use_running_average is None:
            use_running_average = self.use_running_average
        if use_running_average:
            return super().__call__(x, use_running_average)
        y, mean, var = ops.batch_norm(x, self.scale[...], self.bias[...], self.epsilon)
        for stat, batch_stat in ((self.mean, mean), (self.var, var)):
            stat[...] = jax.lax.stop_gradient(
                self.momentum * stat[...] + (1 - self.momentum) * batch_stat
            )
        return y


def linear(
    in_features: int, out_features: int, *, xavier: bool = False, rngs: nnx.Rngs
) -> nnx.Linear:
    """Fully connected layer with zero bias; kernel init Flax's default or ``xavier_uniform``."""
    if xavier:
        return nnx.Linear(in_features, out_features, kernel_init=xavier_uniform, rngs=rngs)
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
    """Conv (no bias) followed by BatchNorm, without activation; options go to conv / batch_norm."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel: int,
        stride: int = 1,
        *,
        groups: int = 1,
        epsilon: float = 1e-5,
        zero_scale: bool = False,
        rngs: nnx.Rngs,
    ):
        self.conv = conv(in_features, out_features, kernel, stride, groups=groups, rngs=rngs)
        self.bn = batch_norm(out_features, epsilon=epsilon, zero_scale=zero_scale, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


class Stem(nnx.Module):
    """ResNet stem: conv 7x7/2 -> BN -> ReLU -> max-pool 3x3/2 pad 1 (spatial size /4)."""

    pool = Step(3, 2, 1)
    steps = (conv_step(7, 2), pool)  # its spatial steps, for image-size checks

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.conv_bn = ConvBN(in_features, out_features, 7, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return max_pool(jax.nn.relu(self.conv_bn(x)), *self.pool)
