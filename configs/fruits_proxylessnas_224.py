"""ProxylessNAS-GPU on Fruits-360 resized to 256, center-cropped to 224, ImageNet-normalized.

The source's best result (99.22%). Batch 128, SGD momentum 0.9, lr 0.001, 20 epochs.
Data: the Fruits-360 folder holding ``Training/`` and ``Test/``:
    python -m flaxcnn.train --config=configs/fruits_proxylessnas_224.py --config.dataset.folder=PATH
"""

import pathlib

import ml_collections

from flaxcnn.config import from_file


def get_config() -> ml_collections.ConfigDict:
    """fruits_proxylessnas.py at ImageNet resolution and normalization."""
    config = from_file(pathlib.Path(__file__).with_name('fruits_proxylessnas.py'))
    config.dataset.image_size = 256
    config.input.center_crop = 224
    config.input.normalization = 'imagenet'
    config.batch_size = 128
    config.eval_batch_size = 128
    return config
