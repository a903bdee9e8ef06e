"""Four architectures on glyphs under the same 600 s: do lighter models win in 10 minutes?

Run: python -m flaxcnn.study --study=configs/studies/glyph_models.py
"""

import pathlib

import ml_collections

from flaxcnn.studies.spec import default_study


def get_config() -> ml_collections.ConfigDict:
    """configs/glyph.py's recipe for each model; 4 trials of 600 s each."""
    study = default_study()
    study.base_config = str(pathlib.Path(__file__).parents[1] / 'glyph.py')
    study.time_budget_s = 600.0
    study.grid = {'model': ('mynet_v1', 'mynet_v2', 'resnet_lite_11', 'resnet_lite_22')}
    return study
