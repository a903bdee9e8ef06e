"""Compare runs' model and checkpoint sizes: ``python -m flaxcnn.sizes WORKDIR... [--plot=sizes.png]``.

For each run: model, trainable parameters, parameter MB (fp32), on-disk MB of an Orbax
checkpoint of params + batch statistics (what inference needs) and of the full training state
(with optimizer state) as saved, best validation and test accuracy. Prints one table and
writes a bar chart.
"""

from __future__ import annotations

import json
import pathlib
import tempfile

import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags
from flax import nnx

from flaxcnn import checkpoint, cli, models

_PLOT = flags.DEFINE_string('plot', 'sizes.png', 'Where to write the bar chart ("" for none).')

MB = 2**20


def _disk_mb(path: pathlib.Path) -> float:
    return sum(f.stat().st_size for f in path.rglob('*') if f.is_file()) / MB


def run_sizes(workdir: str | pathlib.Path) -> dict:
    """One row of the table for the run in ``workdir`` (its best checkpoint)."""
    run = checkpoint.load_run(workdir)
    params, batch_stats = run.variables
    model_state = {'params': nnx.to_pure_dict(params), 'batch_stats': nnx.to_pure_dict(batch_stats)}
    num_params = models.count_params(run.model)
    with tempfile.TemporaryDirectory() as tmp:
        with ocp.StandardCheckpointer() as saver:
            saver.save(pathlib.Path(tmp) / 'model', model_state)
        model_mb = _disk_mb(pathlib.Path(tmp) / 'model')
    summary_path = run.workdir / 'summary.json'
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return {
        'run': str(run.workdir),
        'model': run.meta['model'],
        'params': int(num_params),
        'param_mb': num_params * 4 / MB,
        'checkpoint_model_mb': model_mb,
        'checkpoint_full_mb': _disk_mb(run.workdir / 'checkpoints' / str(run.step) / 'state'),
        'best_valid_accuracy': run.meta['progress']['best_valid_accuracy'],
        'test_accuracy': summary.get('test_accuracy'),
    }


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    labels = [f'{r["model"]}\n{pathlib.Path(r["run"]).name}' for r in rows]
    keys = [
        ('param_mb', 'parameters (fp32)'),
        ('checkpoint_model_mb', 'params + BN stats'),
        ('checkpoint_full_mb', 'full training state'),
    ]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(rows)), 4.5))
    for k, (key, label) in enumerate(keys):
        bars = ax.bar(x + (k - 1) * 0.27, [r[key] for r in rows], 0.27, label=label)
        ax.bar_label(bars, fmt='%.1f', fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_ylabel('MB')
    ax.set_title('Model and checkpoint sizes')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pct(value) -> str:
    return '-' if value is None else f'{value:.2%}'


def main(argv) -> None:
    cli.start()
    if len(argv) < 2:
        raise app.UsageError('Usage: python -m flaxcnn.sizes WORKDIR... [--plot=sizes.png]')
    rows = [run_sizes(w) for w in argv[1:]]
    print(
        f'{"run":<24} {"model":<18} {"params":>12} {"param MB":>9} {"ckpt MB":>8} '
        f'{"full MB":>8} {"valid":>7} {"test":>7}'
    )
    for r in rows:
        print(
            f'{pathlib.Path(r["run"]).name:<24} {r["model"]:<18} {r["params"]:>12,} '
            f'{r["param_mb"]:>9.1f} {r["checkpoint_model_mb"]:>8.1f} '
            f'{r["checkpoint_full_mb"]:>8.1f} {_pct(r["best_valid_accuracy"]):>7} '
            f'{_pct(r["test_accuracy"]):>7}'
        )
    if _PLOT.value:
        _plot(rows, _PLOT.value)
        print(f'bar chart -> {_PLOT.value}')


if __name__ == '__main__':
    cli.run(main)
