"""A tiny glyph run for tests, CI and docs: a few steps in seconds on 2 CPU cores.

Run: python -m flaxcnn.train --config=configs/glyph_smoke.py --workdir=/tmp/smoke
"""

import pathlib

import ml_collections

from flaxcnn.config import from_file


def get_config() -> ml_collections.ConfigDict:
    """glyph.py shrunk: 32x32 images, 8 per class, narrow MyNet v2, 2 epochs."""
    config = from_file(pathlib.Path(__file__).with_name('glyph.py'))
    config.model_kwargs = ml_collections.ConfigDict({'widths': (8, 16, 32)})
    config.dataset.image_size = 32
    config.dataset.train_per_class = 8
    config.dataset.validation_per_class = 2
    config.dataset.test_per_class = 2
    config.input.num_workers = 0
    config.batch_size = 64
    config.eval_batch_size = 128
    config.num_epochs = 2
    config.time_budget_s = 0.0
    config.schedule.name = 'constant'
    config.checkpoint.every_steps = 3
    config.log_every_steps = 2
    return config
