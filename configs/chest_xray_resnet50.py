"""ResNet-50 on the Kaggle chest X-ray pneumonia set, 224x224 grayscale, never flipped.

Data: the Kaggle ``chest_xray`` folder (see chest_xray_cnn.py):
    python -m flaxcnn.train --config=configs/chest_xray_resnet50.py --config.dataset.folder=PATH
"""

import pathlib

import ml_collections

from flaxcnn.config import from_file


def get_config() -> ml_collections.ConfigDict:
    """SGD momentum 0.9, lr 0.01 with cosine decay, batch 32, 10 epochs."""
    config = from_file(pathlib.Path(__file__).with_name('chest_xray_cnn.py'))
    config.model = 'resnet50'
    config.dataset.image_size = 224
    config.batch_size = 32
    config.eval_batch_size = 64
    config.num_epochs = 10
    config.optimizer.name = 'sgd'
    config.optimizer.momentum = 0.9
    config.optimizer.lr = 0.01
    config.schedule.name = 'cosine'
    config.schedule.warmup_epochs = 0.5
    return config
