"""Print every registered model's trainable parameter count and output shape (abstract evaluation only).

Usage: ``python -m flaxcnn.models --num-classes 52 --in-channels 1 --image-size 90 [--macs]``
"""

import argparse
import math
from collections.abc import Sequence

import jax
import jax.extend.core
import jax.numpy as jnp
from flax import nnx

from flaxcnn import ops
from flaxcnn.models import abstract_model, count_params, model_names


def summarize(
    name: str, *, num_classes: int, in_channels: int, image_size: int
) -> tuple[int, tuple[int, ...]]:
    """(trainable parameter count, output shape for a batch of 1) of model ``name``, without real compute."""
    model = abstract_model(
        name, num_classes=num_classes, in_channels=in_channels, image_size=image_size
    )
    model.eval()
    x = jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), jnp.float32)
    out = nnx.eval_shape(lambda m, inputs: m(inputs), model, x)
    return count_params(model), tuple(out.shape)


def _jaxpr_macs(jaxpr: jax.extend.core.Jaxpr) -> int:
    """Multiply-adds of the convs and matmuls in ``jaxpr`` and its sub-jaxprs (no loops)."""
    macs = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == 'conv_general_dilated':
            out, rhs = eqn.outvars[0].aval.shape, eqn.invars[1].aval.shape
            out_features = rhs[eqn.params['dimension_numbers'].rhs_spec[0]]
            macs += math.prod(out) * math.prod(rhs) // out_features
        elif eqn.primitive.name == 'dot_general':
            out, lhs = eqn.outvars[0].aval.shape, eqn.invars[0].aval.shape
            (contracting, _), _ = eqn.params['dimension_numbers']
            macs += math.prod(out) * math.prod(lhs[axis] for axis in contracting)
        macs += sum(map(_jaxpr_macs, jax.extend.core.jaxprs_in_params(eqn.params)))
    return macs


def count_macs(name: str, *, num_classes: int, in_channels: int, image_size: int) -> int:
    """Multiply-adds of model ``name`` (eval mode) on one image: every conv and matmul, traced."""
    model = abstract_model(
        name, num_classes=num_classes, in_channels=in_channels, image_size=image_size
    )
    model.eval()
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), jnp.float32)
    previous = ops.implementation()
    ops.set_implementation('plain')  # convs as convs, not as their fast reformulations
    try:
        closed = jax.make_jaxpr(lambda state, x: nnx.merge(graphdef, state)(x))(state, x)
    finally:
        ops.set_implementation(previous)
    return _jaxpr_macs(closed.jaxpr)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog='python -m flaxcnn.models', description=__doc__.splitlines()[0]
    )
    parser.add_argument('--num-classes', type=int, default=52)
    parser.add_argument('--in-channels', type=int, default=1)
    parser.add_argument('--image-size', type=int, default=90)
    parser.add_argument(
        '--macs', action='store_true', help='add a column of multiply-adds per image (traced)'
    )
    args = parser.parse_args(argv)

    print(
        f'# num_classes={args.num_classes} in_channels={args.in_channels} image_size={args.image_size}'
    )
    sizes = {
        'num_classes': args.num_classes,
        'in_channels': args.in_channels,
        'image_size': args.image_size,
    }
    macs_header = f' {"MACs":>10}' if args.macs else ''
    print(f'{"model":<16} {"params":>12}{macs_header}  output')
    for name in model_names():
        params, shape = summarize(name, **sizes)
        macs = f' {count_macs(name, **sizes) / 1e6:>9,.1f}M' if args.macs else ''
        print(f'{name:<16} {params:>12,}{macs}  {shape}')


if __name__ == '__main__':
    main()
