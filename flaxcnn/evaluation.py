"""Metrics beyond accuracy from a confusion matrix: per-class precision and recall, JSON and PNG."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np


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
