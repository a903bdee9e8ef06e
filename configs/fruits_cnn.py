"""Basic CNN on Fruits-360 (100x100 RGB): Adam lr 0.01, batch 1024, 20 epochs, random flips.

Data: the Fruits-360 folder you downloaded (it holds ``Training/`` and ``Test/``), e.g.
    python -m flaxcnn.train --config=configs/fruits_cnn.py --workdir=runs/fruits_cnn \\
        --config.dataset.folder=~/data/fruits-360
Continue from that run's checkpoint for 20 more epochs at lr 0.001 (the source's second stage):
    python -m flaxcnn.train --config=configs/fruits_cnn.py --workdir=runs/fruits_cnn \\
        --config.dataset.folder=~/data/fruits-360 --config.num_epochs=40 --config.optimizer.lr=0.001
"""

import ml_collections

from flaxcnn.config import default_config


def get_config() -> ml_collections.ConfigDict:
    """The source's first stage; the second is the override shown above."""
    config = default_config()
    config.model = 'basic_cnn'
    config.dataset.name = 'fruits360'
    config.dataset.folder = ''  # '' = TFDS manual_dir: <data_dir>/downloads/manual/fruits360
    config.dataset.image_size = 100
    config.dataset.channels = 3
    config.dataset.resize = 'crop'
    config.dataset.validation_fraction = 0.1  # carved from Training/, stratified
    config.dataset.min_validation_per_class = 10
    config.input.flip = True
    config.batch_size = 1024
    config.num_epochs = 20
    config.optimizer.name = 'adam'
    config.optimizer.lr = 0.01
    config.schedule.name = 'constant'
    return config
