"""MyNet v2's width and dropout, one change at a time, as the source compared them.

Widths: a quarter, a half, and an extra 128- or 256-wide block; dropout 0.1 to 0.3 (0.4 is
MyNet v2's own). 8 trials of 300 s each.
Run: python -m flaxcnn.study --study=configs/studies/glyph_width_dropout.py
"""

import pathlib

import ml_collections

from flaxcnn.studies.spec import default_study


def get_config() -> ml_collections.ConfigDict:
    """configs/glyph.py with one named variant per trial."""
    study = default_study()
    study.base_config = str(pathlib.Path(__file__).parents[1] / 'glyph.py')
    study.time_budget_s = 300.0

    def widths(*w):
        return {'model_kwargs': {'widths': w}}

    def dropout(p):
        return {'model_kwargs': {'dropout': p}}

    study.variants = {
        'mynet_v2': {},
        '1/4 width': widths(8, 16, 32),
        '1/2 width': widths(16, 32, 64),
        '+128 block': widths(32, 64, 128, 128),
        '+256 block': widths(32, 64, 128, 256),
        'dropout 10%': dropout(0.1),
        'dropout 20%': dropout(0.2),
        'dropout 30%': dropout(0.3),
    }
    return study
