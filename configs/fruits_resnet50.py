"""ResNet-50 on Fruits-360 (100x100 RGB): SGD momentum 0.9, lr 0.001, batch 512, 20 epochs.

Data: the Fruits-360 folder holding ``Training/`` and ``Test/``:
    python -m flaxcnn.train --config=configs/fruits_resnet50.py --config.dataset.folder=PATH
"""

import pathlib

import ml_collections

from flaxcnn.config import from_file


def get_config() -> ml_collections.ConfigDict:
    """fruits_cnn.py's data with the source's ResNet-50 recipe."""
    config = from_file(pathlib.Path(__file__).with_name('fruits_cnn.py'))
    config.model = 'resnet50'
    config.batch_size = 512
    config.eval_batch_size = 256
    config.num_epochs = 20
    config.optimizer.name = 'sgd'
    config.optimizer.momentum = 0.9
    config.optimizer.lr = 0.001
    return config
