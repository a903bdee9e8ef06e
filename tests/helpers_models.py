"""Helpers shared by the model tests: cached shape-only models and their shape-only forward pass."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from flaxcnn import models

# name -> (num_classes, in_channels, image_size, trainable parameters) of each model's reference
# setting: the glyph models at 52 classes of 90x90 grey images; basic_cnn for Fruits-360;
# resnet50 as torchvision's, proxylessnas_gpu as the official proxyless_gpu (ImageNet).
REFERENCE = {
    'basic_cnn': (131, 3, 100, 3_060_071),
    'mynet_v1': (52, 1, 90, 1_044_212),
    'mynet_v2': (52, 1, 90, 344_468),
    'proxylessnas_gpu': (1000, 3, 224, 7_119_848),
    'resnet50': (1000, 3, 224, 25_557_032),
    'resnet_lite_11': (52, 1, 90, 1_165_812),
    'resnet_lite_22': (52, 1, 90, 2_641_908),
}


@functools.cache
def reference_model(name: str) -> nnx.Module:
    """Shape-only model ``name`` at its reference setting, built once per session (read it only)."""
    num_classes, in_channels, image_size, _ = REFERENCE[name]
    return models.abstract_model(
        name, num_classes=num_classes, in_channels=in_channels, image_size=image_size
    )


def abstract_forward(model: nnx.Module, shape, *, train: bool) -> jax.ShapeDtypeStruct:
    """Output of ``model`` in train or eval mode on a float32 input of ``shape``, shapes only."""
    if train:
        model.train()
    else:
        model.eval()
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    call_kwargs = {'rngs': jax.random.key(0)} if train else {}
    return nnx.eval_shape(lambda m, inputs: m(inputs, **call_kwargs), model, x)


def quick_key(seed: int = 0) -> jax.Array:
    """A key for throwaway random values (weights, dropout masks, inputs): XLA's RngBitGenerator
    compiles much faster than the default threefry, whose compiles dominate small eager tests."""
    return jax.random.key(seed, impl='unsafe_rbg')


def quick_rngs(seed: int = 0) -> nnx.Rngs:
    """``nnx.Rngs`` drawing from ``quick_key(seed)``."""
    return nnx.Rngs(quick_key(seed))


def modules_of(model: nnx.Module, kind: type) -> list[nnx.Module]:
    """All submodules of ``model`` that are instances of ``kind``, in graph order."""
    return [m for _, m in nnx.iter_modules(model) if isinstance(m, kind)]
