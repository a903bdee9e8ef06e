"""A small TPE search over MyNet v2's learning rate, weight decay and dropout, with pruning.

Trials run 180 s each; one falling below the median of earlier trials at the same training
seconds is stopped. 12 trials, the first 5 random.
Run: python -m flaxcnn.study --study=configs/studies/glyph_tpe.py
"""

import pathlib

import ml_collections

from flaxcnn.studies.spec import default_study, log_uniform, uniform


def get_config() -> ml_collections.ConfigDict:
    """configs/glyph.py with Adam's lr, its L2 weight decay and MyNet v2's dropout searched."""
    study = default_study()
    study.base_config = str(pathlib.Path(__file__).parents[1] / 'glyph.py')
    study.time_budget_s = 180.0
    study.search.sampler = 'tpe'
    study.search.num_trials = 12
    study.search.space = {
        'optimizer': {'lr': log_uniform(3e-4, 1e-2), 'weight_decay': log_uniform(1e-6, 1e-3)},
        'model_kwargs': {'dropout': uniform(0.1, 0.5)},
    }
    study.pruning.enabled = True  # by training seconds: the trials have a time budget
    study.pruning.startup_trials = 3
    study.pruning.warmup = 36  # seconds: two of the pruner's reports (every 18 s)
    return study
