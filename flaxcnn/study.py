"""Run a study: ``python -m flaxcnn.study --study=configs/studies/smoke.py [--workdir=DIR] [--parallel=N]``.

Every trial is an ordinary run under ``<workdir>/trials/``; Optuna's database is
``<workdir>/study.db``. Running the same command again resumes the study. At the end (or with
``--report`` alone) the leaderboard, plots and ``report.html`` are written to ``<workdir>/report/``.
"""

from __future__ import annotations

import os
import pathlib

from absl import app, flags
from ml_collections import config_flags

from flaxcnn import cli
from flaxcnn.studies import report, runner
from flaxcnn.studies.spec import Study

_STUDY = config_flags.DEFINE_config_file(
    'study', None, 'Study config file, e.g. configs/studies/smoke.py.', lock_config=True
)
_WORKDIR = cli.define_once(
    'workdir',
    lambda: flags.DEFINE_string(
        'workdir', None, 'Study directory (default: studies/<study file name>).'
    ),
)
_PARALLEL = flags.DEFINE_integer(
    'parallel',
    None,
    'Trials at once, each its own process (default: one per GPU; 1 without GPUs, where '
    "trials would only take each other's cores).",
)
_REPORT = flags.DEFINE_bool(
    'report', False, 'Only write the report of the study in --workdir from what it holds.'
)


def main(argv) -> None:
    cli.start()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    study_file = config_flags.get_config_filename(flags.FLAGS['study'])
    if _WORKDIR.value:
        workdir = pathlib.Path(_WORKDIR.value)
    elif study_file:
        workdir = pathlib.Path('studies') / pathlib.Path(study_file).stem
    else:
        raise app.UsageError('Give --study=FILE to run a study, or --workdir=DIR --report.')
    if _REPORT.value:  # checkpoints are read on the CPU: trials may be using the GPUs
        os.environ.setdefault('JAX_PLATFORMS', 'cpu')
    else:
        if not study_file:
            raise app.UsageError('--study=FILE is required unless --report is given.')
        spec = Study.load(_STUDY.value, name=pathlib.Path(study_file).stem)
        runner.run(spec, workdir, _PARALLEL.value)
    print(f'report -> {report.write(workdir)}', flush=True)  # a StudyError ends in cli.run


if __name__ == '__main__':
    cli.run(main)
