"""Test-split metrics of a run's best checkpoint: ``python -m flaxcnn.evaluate --workdir=DIR``.

Writes ``<workdir>/eval/test.json`` (accuracy, per-class precision/recall, confusion matrix)
and ``<workdir>/eval/test.png``, and prints a per-class table.
"""

from __future__ import annotations

from absl import app, flags

from flaxcnn import checkpoint, cli, distributed, evaluation, ops
from flaxcnn.data import datasets

_WORKDIR = cli.define_once(
    'workdir',
    lambda: flags.DEFINE_string('workdir', None, 'Run directory written by flaxcnn.train.'),
)
_SPLIT = flags.DEFINE_enum('split', 'test', ['test', 'validation'], 'Split to evaluate.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Where the prepared datasets live, if not where the run had them.'
)
flags.mark_flag_as_required('workdir')


def main(argv) -> None:
    cli.start()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    run = checkpoint.load_run(_WORKDIR.value)
    if _DATA_DIR.value:
        run.config.dataset.data_dir = _DATA_DIR.value
    dataset = datasets.load(run.config.dataset)
    checkpoint.check_identity(run.workdir, run.meta, checkpoint.run_identity(run.config, dataset))
    mesh = distributed.create_mesh()
    distributed.check_divisible(mesh, eval_batch_size=run.config.eval_batch_size)
    report_dir = run.workdir / 'eval'
    with ops.use(run.config.ops):  # the evaluator compiles its step here
        evaluator = evaluation.Evaluator(
            run.config, dataset, run.forward, run.variables, mesh, report_dir
        )
    metrics = evaluator.run(run.model, _SPLIT.value)
    print(f'{"class":<24} {"precision":>9} {"recall":>9} {"support":>8}')
    for name, m in metrics['per_class'].items():
        print(f'{name:<24} {m["precision"]:>9.4f} {m["recall"]:>9.4f} {m["support"]:>8d}')
    print(
        f'{_SPLIT.value} of {_WORKDIR.value} (step {run.step}): accuracy '
        f'{metrics["accuracy"]:.2%}, macro recall {metrics["macro_recall"]:.2%}, macro '
        f'precision {metrics["macro_precision"]:.2%} -> {report_dir / _SPLIT.value}.json'
    )


if __name__ == '__main__':
    cli.run(main)
