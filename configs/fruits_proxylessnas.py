"""ProxylessNAS-GPU on raw 100x100 Fruits-360: SGD momentum 0.9, lr 0.001, batch 512, 20 epochs.

Data: the Fruits-360 folder holding ``Training/`` and ``Test/``:
    python -m flaxcnn.train --config=configs/fruits_proxylessnas.py --config.dataset.folder=PATH
See fruits_proxylessnas_224.py for the resize-256 / center-crop-224 / ImageNet-normalized variant.
"""

import pathlib

import ml_collections

from flaxcnn.config import from_file


def get_config() -> ml_collections.ConfigDict:
    """fruits_cnn.py's data with the source's ProxylessNAS recipe."""
    config = from_file(pathlib.Path(__file__).with_name('fruits_cnn.py'))
    config.model = 'proxylessnas_gpu'
    config.batch_size = 512
    config.eval_batch_size = 256
    config.num_epochs = 20
    config.optimizer.name = 'sgd'
    config.optimizer.momentum = 0.9
    config.optimizer.lr = 0.001
    return config
