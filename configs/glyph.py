"""MyNet v2 on the embedded 52-class glyph set: the best model within 10 minutes.

Data: generated locally on first use (no download) into ``dataset.data_dir``.
Run: python -m flaxcnn.train --config=configs/glyph.py
"""

import ml_collections

from flaxcnn.config import default_config


def get_config() -> ml_collections.ConfigDict:
    """Adam lr 0.002, batch 512, rotations up to 5 degrees, 600 s budget with linear decay."""
    config = default_config()
    config.model = 'mynet_v2'
    config.dataset.name = 'glyphs'
    config.dataset.image_size = 90
    config.dataset.train_per_class = 600
    config.dataset.validation_per_class = 150
    config.dataset.test_per_class = 150
    config.input.rotation_degrees = 5.0
    config.batch_size = 512
    config.num_epochs = 100
    config.time_budget_s = 600.0
    config.optimizer.name = 'adam'
    config.optimizer.lr = 0.002
    config.schedule.name = 'time_linear'
    return config
