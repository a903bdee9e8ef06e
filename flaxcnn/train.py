"""Train a model: ``python -m flaxcnn.train --config=configs/glyph.py [--workdir=DIR] [--config.FIELD=VALUE ...]``.

Running the same command again with the same workdir resumes where the run stopped.
"""

from __future__ import annotations

import pathlib

from absl import app, flags, logging
from ml_collections import config_flags

from flaxcnn.trainer import Trainer

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. configs/glyph.py.', lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    'workdir',
    None,
    'Run directory for checkpoints, metrics and summary.json (default: runs/<config file name>).',
)
flags.mark_flags_as_required(['config'])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    if not flags.FLAGS['verbosity'].present:  # Orbax logs every save at INFO.
        logging.set_verbosity(logging.WARNING)
    workdir = _WORKDIR.value or str(
        pathlib.Path('runs')
        / pathlib.Path(config_flags.get_config_filename(flags.FLAGS['config'])).stem
    )
    Trainer(_CONFIG.value, workdir).run()


if __name__ == '__main__':
    app.run(main)
