"""Model registry: ``create_model(name, ...)`` builds any registered Flax NNX classifier.

Every model takes NHWC float32 input and is called as ``model(x, *, rngs=None)``; ``rngs``
(an ``nnx.Rngs`` or a key) feeds Dropout in train mode. Modes are set with ``model.train()`` /
``model.eval()``. Models hold only ``nnx.Param`` and ``nnx.BatchStat`` state.
"""

from collections.abc import Callable, Sequence

import jax
from flax import nnx

ModelFactory = Callable[..., nnx.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a model factory under ``name``."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f'model {name!r} is already registered')
        _REGISTRY[name] = factory
        return factory

    return decorator


def model_names() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY)


def create_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    rngs: nnx.Rngs,
    image_size: int | Sequence[int] = 90,
    **kwargs,
) -> nnx.Module:
    """Build model ``name``; ``image_size`` (S or (H, W)) and extra kwargs are forwarded to its factory.

    Flatten-head models (mynet_*) size their classifier from ``image_size``; global-pooling
    models (resnet_lite_*) accept and ignore it.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f'unknown model {name!r}; registered models: {", ".join(model_names())}'
        ) from None
    return factory(
        num_classes=num_classes, in_channels=in_channels, rngs=rngs, image_size=image_size, **kwargs
    )


def abstract_model(
    name: str, *, num_classes: int, in_channels: int, image_size: int | Sequence[int] = 90, **kwargs
) -> nnx.Module:
    """Model ``name`` with shapes and dtypes only: no parameter initialisation compute."""
    return nnx.eval_shape(
        lambda: create_model(
            name,
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            rngs=nnx.Rngs(0),
            **kwargs,
        )
    )


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars (``nnx.Param`` leaves); works on abstract models too."""
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


__all__ = ['abstract_model', 'count_params', 'create_model', 'model_names', 'register']

# Importing the family modules registers their models.
from flaxcnn.models import basic_cnn, mynet, proxylessnas, resnet, resnet_lite  # noqa: E402,F401
