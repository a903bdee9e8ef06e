"""Batch size x learning rate for MyNet v2 on glyphs, every trial under the same time budget.

The source found batch 512 with lr 0.002 best. 16 trials of 300 s each.
Run: python -m flaxcnn.study --study=configs/studies/glyph_lr_batch.py
"""

import pathlib

import ml_collections

from flaxcnn.studies.spec import default_study


def get_config() -> ml_collections.ConfigDict:
    """configs/glyph.py (linear decay over the budget) with batch {128..1024} x lr {5e-4..5e-3}."""
    study = default_study()
    study.base_config = str(pathlib.Path(__file__).parents[1] / 'glyph.py')
    study.time_budget_s = 300.0
    study.grid = {
        'batch_size': (128, 256, 512, 1024),
        'optimizer': {'lr': (5e-4, 1e-3, 2e-3, 5e-3)},
    }
    return study
