"""The evaluator: loss, accuracy, confusion matrix and per-class metrics of a model on a split,
with their JSON and PNG reports."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from flaxcnn import distributed, steps
from flaxcnn.data import datasets, pipeline


class Evaluator:
    """Evaluates model variables on the splits of ``dataset``; its step is compiled once, here.

    ``run`` takes a ``TrainState`` (the training loop) or an eval-mode model (a loaded run),
    and returns ``class_metrics`` plus ``loss``; with a ``report_dir``, process 0 also writes
    ``<report_dir>/<split>.{json,png}``.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        dataset: datasets.Dataset,
        forward: Callable,
        variables: tuple,
        mesh: Mesh,
        report_dir: pathlib.Path | None = None,
    ):
        """``forward`` is ``steps.make_forward``'s function and ``variables`` are shaped like
        those it will run with; batches follow ``config.eval_batch_size`` and ``config.input``."""
        self._config, self._dataset, self._mesh = config, dataset, mesh
        self._report_dir = report_dir
        image_shape = pipeline.input_shape(dataset.image_shape, config.input.center_crop)
        eval_step = steps.make_eval_step(forward, len(dataset.class_names))
        spec = distributed.batch_spec(mesh, config.eval_batch_size, image_shape, with_mask=True)
        self._step = distributed.jit_eval_step(eval_step, mesh).lower(variables, spec).compile()

    def run(self, state_or_model, split: str) -> dict[str, Any]:
        """Loss, accuracy, confusion and per-class metrics on ``split``."""
        variables = jax.device_put(  # a loaded run's are on one device
            steps.inference_variables(state_or_model), distributed.replicated(self._mesh)
        )
        totals = None
        for batch in pipeline.eval_batches(
            self._dataset.splits[split],
            batch_size=self._config.eval_batch_size,
            center_crop=self._config.input.center_crop,
            shard_index=jax.process_index(),
            num_shards=jax.process_count(),
        ):
            out = self._step(variables, distributed.to_device(self._mesh, batch))
            totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
        totals = jax.device_get(totals)
        metrics = class_metrics(totals['confusion'], self._dataset.class_names)
        metrics['loss'] = float(totals['loss']) / int(totals['count'])
        if self._report_dir is not None and distributed.is_primary():
            write_report(metrics, self._report_dir, split)
        return metrics


def class_metrics(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro averages and per-class precision/recall/support of ``confusion[true, pred]``."""
    confusion = np.asarray(confusion, np.int64)
    correct = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    recall = np.divide(correct, support, out=np.zeros(len(correct)), where=support > 0)
    precision = np.divide(correct, predicted, out=np.zeros(len(correct)), where=predicted > 0)
    return {
        'accuracy': float(correct.sum() / max(1, confusion.sum())),
        'macro_recall': float(recall[support > 0].mean()) if support.any() else 0.0,
        'macro_precision': float(precision[predicted > 0].mean()) if predicted.any() else 0.0,
        'per_class': {
            name: {
                'precision': float(precision[i]),
                'recall': float(recall[i]),
                'support': int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        'class_names': list(class_names),
        'confusion': confusion.tolist(),
    }


def _replace_atomically(path: pathlib.Path, write) -> None:
    tmp = path.with_name(path.name + '.tmp')
    try:
        write(tmp)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(
            e.errno,
            f'Writing the report {path} failed (full disk?): {e.strerror or e}. '
            'The previous version of the file, if any, is untouched.',
        ) from e
    os.replace(tmp, path)


def write_report(metrics: dict[str, Any], directory: pathlib.Path, name: str) -> None:
    """Writes ``<name>.json`` and a confusion-matrix ``<name>.png`` into ``directory``."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    _replace_atomically(
        directory / f'{name}.json',
        lambda p: p.write_text(json.dumps(metrics, indent=1) + '\n', encoding='utf-8'),
    )
    confusion = np.asarray(metrics['confusion'])
    names = metrics['class_names']
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    size = min(24.0, 3.0 + 0.22 * len(names))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap='Blues', vmin=0.0, vmax=1.0)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=90, fontsize=6 if len(names) > 30 else 9)
    ax.set_yticks(ticks, names, fontsize=6 if len(names) > 30 else 9)
    if len(names) <= 12:
        for (i, j), count in np.ndenumerate(confusion):
            ax.text(
                j,
                i,
                str(count),
                ha='center',
                va='center',
                color='white' if share[i, j] > 0.5 else 'black',
            )
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(
        f'{name}: accuracy {metrics["accuracy"]:.2%}, macro recall {metrics["macro_recall"]:.2%}'
    )
    fig.tight_layout()
    _replace_atomically(directory / f'{name}.png', lambda p: fig.savefig(p, format='png', dpi=100))
    plt.close(fig)
