"""Train a model: ``python -m flaxcnn.train --config=configs/glyph.py [--workdir=DIR] [--config.FIELD=VALUE ...]``.

Running the same command again with the same workdir resumes where the run stopped.
"""

from __future__ import annotations

import pathlib

from absl import app, flags
from ml_collections import config_flags

from flaxcnn import cli, training

_CONFIG = cli.config_flag()
_WORKDIR = cli.define_once(
    'workdir',
    lambda: flags.DEFINE_string(
        'workdir',
        None,
        'Run directory for checkpoints, metrics and summary.json (default: runs/<config file name>).',
    ),
)
flags.mark_flags_as_required(['config'])


def main(argv) -> None:
    cli.start()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    workdir = _WORKDIR.value or str(
        pathlib.Path('runs')
        / pathlib.Path(config_flags.get_config_filename(flags.FLAGS['config'])).stem
    )
    config = _CONFIG.value
    try:  # a --config file that failed to load is a placeholder raising on first use
        config.keys()
    except OSError as e:
        raise app.UsageError(str(e)) from e
    training.train_and_evaluate(config, workdir)


if __name__ == '__main__':
    cli.run(main)
