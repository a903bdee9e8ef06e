"""Print every registered model's trainable parameter count and output shape (abstract evaluation only).

Usage: ``python -m flaxcnn.models --num-classes 52 --in-channels 1 --image-size 90``
"""

import argparse
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flaxcnn.models import count_params, create_model, model_names


def summarize(
    name: str, *, num_classes: int, in_channels: int, image_size: int
) -> tuple[int, tuple[int, ...]]:
    """(trainable parameter count, output shape for a batch of 1) of model ``name``, without real compute."""
    model = nnx.eval_shape(
        lambda: create_model(
            name,
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            rngs=nnx.Rngs(0),
        )
    )
    model.eval()
    x = jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), jnp.float32)
    out = nnx.eval_shape(lambda m, inputs: m(inputs), model, x)
    return count_params(model), tuple(out.shape)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog='python -m flaxcnn.models', description=__doc__.splitlines()[0]
    )
    parser.add_argument('--num-classes', type=int, default=52)
    parser.add_argument('--in-channels', type=int, default=1)
    parser.add_argument('--image-size', type=int, default=90)
    args = parser.parse_args(argv)

    print(
        f'# num_classes={args.num_classes} in_channels={args.in_channels} image_size={args.image_size}'
    )
    print(f'{"model":<16} {"params":>12}  output')
    for name in model_names():
        params, shape = summarize(
            name,
            num_classes=args.num_classes,
            in_channels=args.in_channels,
            image_size=args.image_size,
        )
        print(f'{name:<16} {params:>12,}  {shape}')


if __name__ == '__main__':
    main()
