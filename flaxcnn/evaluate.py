"""Test-split metrics of a run's best checkpoint: ``python -m flaxcnn.evaluate --workdir=DIR``.

Writes ``<workdir>/eval/test.json`` (accuracy, per-class precision/recall, confusion matrix)
and ``<workdir>/eval/test.png``, and prints a per-class table.
"""

from __future__ import annotations

from absl import app, flags, logging

from flaxcnn.trainer import Trainer

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory written by flaxcnn.train.')
_SPLIT = flags.DEFINE_enum('split', 'test', ['test', 'validation'], 'Split to evaluate.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Where the prepared datasets live, if not where the run had them.'
)
flags.mark_flag_as_required('workdir')


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    if not flags.FLAGS['verbosity'].present:
        logging.set_verbosity(logging.WARNING)
    overrides = {'data_dir': _DATA_DIR.value} if _DATA_DIR.value else {}
    trainer = Trainer.from_workdir(_WORKDIR.value, **overrides)
    step = trainer.restore_best()
    metrics = trainer.report(_SPLIT.value, trainer.evaluate(_SPLIT.value))
    print(f'{"class":<24} {"precision":>9} {"recall":>9} {"support":>8}')
    for name, m in metrics['per_class'].items():
        print(f'{name:<24} {m["precision"]:>9.4f} {m["recall"]:>9.4f} {m["support"]:>8d}')
    print(
        f'{_SPLIT.value} of {_WORKDIR.value} (step {step}): accuracy {metrics["accuracy"]:.2%}, '
        f'macro recall {metrics["macro_recall"]:.2%}, macro precision '
        f'{metrics["macro_precision"]:.2%} -> {trainer.workdir / "eval" / _SPLIT.value}.json'
    )


if __name__ == '__main__':
    app.run(main)
