"""Model registry: ``create_model(name, ...)`` builds any registered Flax NNX classifier.

Every model takes NHWC float32 input and is called as ``model(x, *, rngs=None)``; ``rngs``
(an ``nnx.Rngs`` or a key) feeds Dropout in train mode. Modes are set with ``model.train()`` /
``model.eval()``. Models hold only ``nnx.Param`` and ``nnx.BatchStat`` state. Each model class
names, for transfer learning, its classifier (``HEAD``, a module path whose parameters are
re-initialised for another class count and trained apart from the backbone) and its first conv
(``INPUT_CONV``, adapted to another channel count).
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
    """Build model ``name`` for ``image_size`` images; extra kwargs go to its factory.

    The image-size rule, the same for every model: ``image_size`` is ``S`` or ``(H, W)`` of
    positive ints. Each model follows it through its convs and pools (``layers.feature_map_size``):
    flatten-head models (mynet_*, basic_cnn) size their classifier from the final feature map,
    global-pooling models (resnet*, proxylessnas_gpu) only check it; an image too small to keep a
    pixel through the model's downsampling is a ``ValueError`` naming the model and the minimum
    size. Construction errors name the model.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f'unknown model {name!r}; registered models: {", ".join(model_names())}'
        ) from None
    try:
        return factory(
            num_classes=num_classes,
            in_channels=in_channels,
            rngs=rngs,
            image_size=image_size,
            **kwargs,
        )
    except ValueError as error:
        raise ValueError(f'model {name!r}: {error}') from error


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
from flaxcnn.models import basic_cnn, mynet, proxylessnas, resnet  # noqa: E402,F401
