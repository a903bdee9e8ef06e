"""MyNet v2 on glyphs in 300 s: glyph.py with the recipe bet on for short budgets (issue #20).

One-cycle rate over the time budget, label smoothing, a moving average of the weights and
random translations beside the rotations. Its runs are in benchmarks/RESULTS.md.
Run: python -m flaxcnn.train --config=configs/glyph_fast.py
"""

import pathlib

import ml_collections

from flaxcnn.config import from_file


def get_config() -> ml_collections.ConfigDict:
    """glyph.py with 300 s, one_cycle to lr 0.004, smoothing 0.1, EMA 0.99, shifts of 4 px."""
    config = from_file(pathlib.Path(__file__).with_name('glyph.py'))
    config.time_budget_s = 300.0
    config.optimizer.lr = 0.004  # the one-cycle peak; it starts and ends far below
    config.schedule.name = 'one_cycle'  # reads the training seconds, as a budget is set
    config.schedule.peak_fraction = 0.25
    config.loss.label_smoothing = 0.1
    config.ema.decay = 0.99  # a horizon of about 100 of the few hundred steps
    config.input.random_crop_pad = 4
    # eval.tta stays off: validation runs every epoch inside the budget, and TTA multiplies it.
    return config
