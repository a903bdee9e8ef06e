"""The evaluator: loss, accuracy, confusion matrix, per-class metrics, balanced accuracy, macro
F1, top-k and (two classes) sensitivity, specificity, ROC AUC and a threshold chosen on
validation, of a model on a split, with their JSON and PNG reports."""

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

from flaxcnn import distributed, metrics as metrics_lib, steps
from flaxcnn.data import datasets, pipeline


class Evaluator:
    """Evaluates model variables on the splits of ``dataset``; its step is compiled once, here.

    ``run`` takes a ``TrainState`` (the training loop) or an eval-mode model (a loaded run),
    and returns ``class_metrics`` plus ``loss``, ``top_k`` and ``binary`` metrics; with a
    ``report_dir``, process 0 also writes ``<report_dir>/<split>.{json,png}`` (and
    ``<split>_roc.png`` for two classes). For two classes the decision threshold is chosen on
    the validation split of the same variables (Youden's J) and applied to the split evaluated.
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
        num_classes = len(dataset.class_names)
        self._top_k = metrics_lib.top_k(num_classes)
        self._positive = None
        if num_classes == 2:
            self._positive = metrics_lib.positive_class(
                dataset.class_names,
                datasets.count_classes(dataset, 'train'),
                config.dataset.get('positive_class', ''),
            )
        eval_step = steps.make_eval_step(forward, num_classes, self._top_k)
        spec = distributed.batch_spec(mesh, config.eval_batch_size, image_shape, with_mask=True)
        self._step = distributed.jit_eval_step(eval_step, mesh).lower(variables, spec).compile()

    def run(self, state_or_model, split: str) -> dict[str, Any]:
        """Loss, accuracy, confusion, per-class and summary metrics on ``split``."""
        variables = jax.device_put(  # a loaded run's are on one device
            steps.inference_variables(state_or_model), distributed.replicated(self._mesh)
        )
        totals, examples = self._evaluate(variables, split)
        names = self._dataset.class_names
        metrics = class_metrics(totals['confusion'], names)
        metrics['loss'] = float(totals['loss']) / int(totals['count'])
        if self._top_k:
            metrics['top_k'] = {
                'k': self._top_k,
                'accuracy': int(totals['top_k_correct']) / int(totals['count']),
            }
        if self._positive is not None:
            labels, scores = examples
            if split == 'validation':
                validation = examples
            else:
                validation = self._evaluate(variables, 'validation')[1]
            metrics['binary'] = metrics_lib.binary_metrics(
                labels == self._positive,
                scores,
                positive_name=names[self._positive],
                threshold=metrics_lib.youden_threshold(
                    validation[0] == self._positive, validation[1]
                ),
            )
        metrics['class_counts'] = {s: list(c) for s, c in self._dataset.class_counts.items()}
        if self._report_dir is not None and distributed.is_primary():
            write_report(metrics, self._report_dir, split)
        return metrics

    def _evaluate(self, variables, split: str) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
        """Summed step metrics, and for two classes each example's (label, positive score)."""
        totals, labels, scores = None, [], []
        for batch in pipeline.eval_batches(
            self._dataset.splits[split],
            batch_size=self._config.eval_batch_size,
            center_crop=self._config.input.center_crop,
            shard_index=jax.process_index(),
            num_shards=jax.process_count(),
        ):
            out = self._step(variables, distributed.to_device(self._mesh, batch))
            if 'examples' in out:
                each = jax.device_get(out.pop('examples'))
                labels.append(each['label'][each['mask']])
                scores.append(each['probabilities'][each['mask'], self._positive])
            totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
        totals = jax.device_get(totals)
        if not labels:
            return totals, (np.zeros(0, np.int64), np.zeros(0))
        return totals, (np.concatenate(labels), np.concatenate(scores))


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
        **metrics_lib.confusion_metrics(confusion),
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
        f'{name}: accuracy {metrics["accuracy"]:.2%}, balanced {metrics["balanced_accuracy"]:.2%}'
    )
    fig.tight_layout()
    _replace_atomically(directory / f'{name}.png', lambda p: fig.savefig(p, format='png', dpi=100))
    plt.close(fig)
    if metrics.get('binary') and metrics['binary']['roc_auc'] is not None:
        _write_roc(plt, metrics['binary'], directory / f'{name}_roc.png', name)


def _write_roc(plt, binary: dict[str, Any], path: pathlib.Path, name: str) -> None:
    """The ROC curve of the positive class, with the chosen threshold's point marked."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(binary['roc']['fpr'], binary['roc']['tpr'], label=f'AUC {binary["roc_auc"]:.3f}')
    ax.plot([0, 1], [0, 1], color='gray', linestyle=':', linewidth=1)
    chosen = binary['at_chosen_threshold']
    if chosen is not None:
        ax.plot(
            1 - chosen['specificity'],
            chosen['sensitivity'],
            'o',
            label=f'threshold {chosen["threshold"]:.3f} (validation, Youden)',
        )
    ax.set_xlabel('1 - specificity (false positive rate)')
    ax.set_ylabel(f'sensitivity ({binary["positive_class"]})')
    ax.set_title(f'{name}: ROC of {binary["positive_class"]}')
    ax.legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    _replace_atomically(path, lambda p: fig.savefig(p, format='png', dpi=100))
    plt.close(fig)


def summary_fields(metrics: dict[str, Any], prefix: str = 'test_') -> dict[str, Any]:
    """The metrics of an evaluation, flat, for summary.json."""
    fields = {
        f'{prefix}accuracy': metrics['accuracy'],
        f'{prefix}loss': metrics['loss'],
        f'{prefix}macro_recall': metrics['macro_recall'],
        f'{prefix}balanced_accuracy': metrics['balanced_accuracy'],
        f'{prefix}macro_f1': metrics['macro_f1'],
    }
    if 'top_k' in metrics:
        k = metrics['top_k']['k']
        fields[f'{prefix}top{k}_accuracy'] = metrics['top_k']['accuracy']
    if binary := metrics.get('binary'):
        chosen = binary['at_chosen_threshold'] or {}
        fields.update(
            {
                'positive_class': binary['positive_class'],
                f'{prefix}sensitivity': binary['sensitivity'],
                f'{prefix}specificity': binary['specificity'],
                f'{prefix}roc_auc': binary['roc_auc'],
                'threshold': chosen.get('threshold'),
                f'{prefix}sensitivity_at_threshold': chosen.get('sensitivity'),
                f'{prefix}specificity_at_threshold': chosen.get('specificity'),
            }
        )
    return fields | {'class_counts': metrics['class_counts']}
