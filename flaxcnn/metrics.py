"""Metrics beyond accuracy, from a confusion matrix or from per-example scores: balanced
accuracy, macro F1, top-k, and for two classes sensitivity, specificity, ROC AUC and the
decision threshold by Youden's J (scikit-learn's ROC curve)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from flaxcnn.config import ConfigError

# Class names that mean "the finding" when dataset.positive_class is not set.
_POSITIVE_NAMES = re.compile(
    r'pneumonia|positive|abnormal|disease|malignant|tumou?r|defect|anomal|fraud|yes', re.IGNORECASE
)


def top_k(num_classes: int) -> int | None:
    """The k of the top-k accuracy reported: 5 above 10 classes, 2 from 3 to 10, none for 2."""
    if num_classes <= 2:
        return None
    return 5 if num_classes > 10 else 2


def confusion_metrics(confusion: np.ndarray) -> dict[str, float]:
    """Balanced accuracy (mean recall over the classes present) and macro F1 (over the classes
    present or predicted), as scikit-learn computes them from the labels."""
    confusion = np.asarray(confusion, np.float64)
    correct, support, predicted = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=support > 0)
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)
    seen = (support > 0) | (predicted > 0)
    return {
        'balanced_accuracy': float(recall[support > 0].mean()) if support.any() else 0.0,
        'macro_f1': float(f1[seen].mean()) if seen.any() else 0.0,
    }


def positive_class(
    class_names: Sequence[str], train_counts: Sequence[int], configured: str = ''
) -> int:
    """The index of the positive class of a binary dataset: ``configured`` (a class name), else
    the one named like a finding (pneumonia, positive, ...), else the rarer one in train."""
    if configured:
        if configured not in class_names:
            raise ConfigError(
                f'config.dataset.positive_class={configured!r} is not a class of the dataset: '
                f'expected one of {list(class_names)}.'
            )
        return list(class_names).index(configured)
    named = [i for i, name in enumerate(class_names) if _POSITIVE_NAMES.search(name)]
    if len(named) == 1:
        return named[0]
    return int(np.argmin(train_counts)) if train_counts[0] != train_counts[1] else 1


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """The score threshold maximizing sensitivity + specificity - 1 (Youden's J) on the ROC
    curve of ``scores`` (positive if ``score >= threshold``); None unless both classes occur."""
    from sklearn import metrics as skm  # here: scikit-learn takes a second to import

    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return None
    fpr, tpr, thresholds = skm.roc_curve(labels, scores)
    finite = np.isfinite(thresholds)
    best = np.argmax(np.where(finite, tpr - fpr, -np.inf))
    return float(thresholds[best])


def binary_metrics(
    labels: np.ndarray, scores: np.ndarray, *, positive_name: str, threshold: float | None
) -> dict[str, Any]:
    """Sensitivity and specificity at the default decision (score >= 0.5) and at
    ``threshold``, ROC AUC and the ROC curve; ``labels`` are True for the positive class."""
    from sklearn import metrics as skm  # here: scikit-learn takes a second to import

    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)

    def at(t: float) -> dict[str, float]:
        predicted = scores >= t
        positives, negatives = labels.sum(), (~labels).sum()
        return {
            'threshold': t,
            'sensitivity': float((predicted & labels).sum() / positives) if positives else 0.0,
            'specificity': float((~predicted & ~labels).sum() / negatives) if negatives else 0.0,
        }

    both = labels.any() and not labels.all()
    fpr, tpr, _ = skm.roc_curve(labels, scores) if both else ([], [], [])
    return {
        'positive_class': positive_name,
        **at(0.5),
        'at_chosen_threshold': at(threshold) if threshold is not None else None,
        'roc_auc': float(skm.roc_auc_score(labels, scores)) if both else None,
        'roc': {'fpr': np.asarray(fpr).tolist(), 'tpr': np.asarray(tpr).tolist()},
    }
