"""Import pretrained PyTorch weights:
``python -m flaxcnn.weights import SRC --model=NAME --out=DIR [--image_size=N]``.

SRC is a state-dict file you have (nothing is downloaded): torchvision's or timm's resnet50
(.pth/.pt/.bin or .safetensors) for ``--model=resnet50``, the MIT HAN Lab ``proxyless_gpu.pth``
for ``--model=proxylessnas_gpu``. DIR becomes an imported-weights folder (``weights.json`` and an
Orbax checkpoint of params and BatchNorm statistics, see ``flaxcnn.convert.folder``), written
whole or not at all.
"""

from __future__ import annotations

from absl import app, flags

from flaxcnn import cli, convert

_MODEL = flags.DEFINE_enum('model', None, sorted(convert.LAYOUTS), 'flaxcnn model to fill.')
_OUT = flags.DEFINE_string('out', None, 'Folder to create with the imported weights.')
_IMAGE_SIZE = flags.DEFINE_integer(
    'image_size', None, 'Input size to record (default: the size the source was trained at).'
)
flags.mark_flags_as_required(['model', 'out'])

USAGE = 'python -m flaxcnn.weights import SRC --model=NAME --out=DIR'


def main(argv) -> None:
    cli.start()
    if len(argv) != 3 or argv[1] != 'import':
        raise app.UsageError(f'Usage: {USAGE}')
    meta = convert.import_weights(  # a WeightsError ends in cli.run
        argv[2], model=_MODEL.value, out=_OUT.value, image_size=_IMAGE_SIZE.value
    )
    print(
        f'{argv[2]} ({meta["source"]["layout"]}) -> {_OUT.value}: {meta["model"]}, '
        f'{meta["num_classes"]} classes, {meta["in_channels"]} channels, '
        f'{meta["image_size"]} px, {meta["normalization"]} normalization; start a run from it '
        f'with --config.init.source={_OUT.value}'
    )


if __name__ == '__main__':
    cli.run(main)
