"""The first study to try: learning rate x batch size on the glyph smoke config, in seconds.

Run: python -m flaxcnn.study --study=configs/studies/smoke.py
"""

import pathlib

import ml_collections

from flaxcnn.studies.spec import default_study


def get_config() -> ml_collections.ConfigDict:
    """A 2 x 2 grid, one seed, two epochs per trial."""
    study = default_study()
    study.base_config = str(pathlib.Path(__file__).parents[1] / 'glyph_smoke.py')
    study.num_epochs = 2
    study.grid = {'optimizer': {'lr': (0.001, 0.003)}, 'batch_size': (32, 64)}
    return study
