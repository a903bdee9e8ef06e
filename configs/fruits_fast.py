"""Basic CNN on Fruits-360 in 300 s: fruits_cnn.py with the recipe bet on for short budgets (#20).

Data: the Fruits-360 folder you downloaded (it holds ``Training/`` and ``Test/``), e.g.
    python -m flaxcnn.train --config=configs/fruits_fast.py \\
        --config.dataset.folder=../shared/data/fruits360-mini
Its measured results are in benchmarks/RESULTS.md; configs/fruits_cnn.py keeps the source's recipe.
"""

import pathlib

import ml_collections

from flaxcnn.config import from_file


def get_config() -> ml_collections.ConfigDict:
    """fruits_cnn.py with 300 s, batch 256, one_cycle to lr 0.003, smoothing 0.1, EMA 0.99,
    rotations of 30 degrees, scalings by 15% and shifts beside the flips."""
    config = from_file(pathlib.Path(__file__).with_name('fruits_cnn.py'))
    config.time_budget_s = 300.0
    config.num_epochs = 1000  # the budget ends the run
    config.batch_size = 256
    config.optimizer.lr = 0.003  # the one-cycle peak
    config.schedule.name = 'one_cycle'  # over the training seconds, as a budget is set
    config.schedule.peak_fraction = 0.25
    config.loss.label_smoothing = 0.1
    config.ema.decay = 0.99
    config.input.rotation_degrees = 30.0  # Test/ holds other captures: more variety than 15
    config.input.random_scale = 0.15
    config.input.random_crop_pad = 6
    return config
