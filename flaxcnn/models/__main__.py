"""Print the model zoo, one row per model, or one model layer by layer (shape-only evaluation).

Usage: ``python -m flaxcnn.models [--model NAME] [--num-classes 52 --in-channels 1
--image-size 90] [--macs]``
"""

import argparse
from collections.abc import Sequence

from flaxcnn.models import abstract_model, count_params, model_names, summary


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog='python -m flaxcnn.models', description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        '--model', choices=model_names(), help='print this model layer by layer (with MACs)'
    )
    parser.add_argument('--num-classes', type=int, default=52)
    parser.add_argument('--in-channels', type=int, default=1)
    parser.add_argument('--image-size', type=int, default=90)
    parser.add_argument(
        '--macs', action='store_true', help='add a column of multiply-adds per image (traced)'
    )
    args = parser.parse_args(argv)

    print(
        f'# num_classes={args.num_classes} in_channels={args.in_channels} '
        f'image_size={args.image_size}'
    )
    input_shape = (args.image_size, args.image_size, args.in_channels)

    def build(name):
        try:
            return abstract_model(
                name,
                num_classes=args.num_classes,
                in_channels=args.in_channels,
                image_size=args.image_size,
            )
        except ValueError as error:  # e.g. an image too small for the model: say so, no traceback
            parser.error(str(error))

    if args.model:
        print(summary.format_table(summary.summarize(build(args.model), input_shape)))
        return
    macs_header = f' {"MACs":>10}' if args.macs else ''
    print(f'{"model":<16} {"params":>12}{macs_header}  output')
    for name in model_names():
        model = build(name)
        layers = summary.summarize(model, input_shape)
        macs = f' {sum(layer.macs for layer in layers) / 1e6:>9,.1f}M' if args.macs else ''
        print(f'{name:<16} {count_params(model):>12,}{macs}  {layers[0].output_shape}')


if __name__ == '__main__':
    main()
