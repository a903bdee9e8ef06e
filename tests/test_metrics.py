"""Metrics beyond accuracy: equal to scikit-learn's on the same labels, computed on device by
the eval step, reported by the evaluator, and the threshold that predict uses."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from absl import app
from sklearn import metrics as skm

from flaxcnn import evaluation, metrics, steps
from flaxcnn.config import ConfigError
from flaxcnn.predict import decision_threshold


def _confusion(true, pred, k):
    return np.bincount(np.asarray(true) * k + pred, minlength=k * k).reshape(k, k)


def test_balanced_accuracy_and_macro_f1_equal_scikit_learn():
    rng = np.random.default_rng(0)
    true = rng.choice(4, 200, p=[0.6, 0.25, 0.15, 0.0])  # class 3 never occurs...
    pred = np.where(rng.random(200) < 0.7, true, rng.integers(0, 4, 200))  # ...but is predicted
    got = metrics.confusion_metrics(_confusion(true, pred, 4))
    assert got['balanced_accuracy'] == pytest.approx(skm.balanced_accuracy_score(true, pred))
    assert got['macro_f1'] == pytest.approx(skm.f1_score(true, pred, average='macro'))
    report = evaluation.class_metrics(_confusion(true, pred, 4), list('abcd'))
    assert report['macro_f1'] == got['macro_f1']


def test_binary_metrics_by_hand_and_against_scikit_learn():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    scores = np.array([0.9, 0.8, 0.4, 0.3, 0.6, 0.35, 0.2, 0.1, 0.05, 0.0])
    # Youden's J: at 0.3 sensitivity 4/4, specificity 4/6 (J 0.667); at 0.8, 2/4 and 6/6 (0.5).
    assert metrics.youden_threshold(labels, scores) == pytest.approx(0.3)
    got = metrics.binary_metrics(labels, scores, positive_name='sick', threshold=0.3)
    assert (got['sensitivity'], got['specificity']) == (0.5, pytest.approx(5 / 6))
    assert got['at_chosen_threshold'] == {
        'threshold': 0.3,
        'sensitivity': 1.0,
        'specificity': pytest.approx(4 / 6),
    }
    assert got['roc_auc'] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert got['roc_auc'] == pytest.approx(21 / 24)  # pairs ranked right: 24 - 3 wrong
    assert metrics.youden_threshold(labels[:4], scores[:4]) is None  # one class only


def test_positive_class_named_configured_or_minority():
    assert metrics.positive_class(['NORMAL', 'PNEUMONIA'], [1341, 3875]) == 1
    assert metrics.positive_class(['benign', 'other'], [10, 90]) == 0  # the minority
    assert metrics.positive_class(['benign', 'other'], [10, 90], 'other') == 1
    with pytest.raises(ConfigError, match="positive_class='sick' is not a class"):
        metrics.positive_class(['a', 'b'], [1, 1], 'sick')
    assert metrics.top_k(2) is None and metrics.top_k(10) == 2 and metrics.top_k(11) == 5


def test_eval_step_counts_top_k_and_keeps_binary_scores():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(16, 12)).astype(np.float32)
    labels = rng.integers(0, 12, 16).astype(np.int32)
    mask = np.arange(16) < 13

    def forward(variables, images):  # the "images" are the logits
        return images

    out = steps.make_eval_step(forward, 12, top_k=5)(
        None, {'image': logits, 'label': labels, 'mask': mask}
    )
    expected = skm.top_k_accuracy_score(labels[:13], logits[:13], k=5, labels=range(12)) * 13
    assert int(out['top_k_correct']) == round(expected) and 'examples' not in out
    binary = steps.make_eval_step(forward, 2)(
        None, {'image': logits[:, :2], 'label': labels % 2, 'mask': mask}
    )
    np.testing.assert_allclose(
        binary['examples']['probabilities'], jax.nn.softmax(logits[:, :2]), rtol=1e-6
    )


def test_binary_report_has_roc_png_summary_fields_and_the_threshold_predict_reads(tmp_path):
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.3, 0.9])
    report = evaluation.class_metrics(
        _confusion(labels, (scores >= 0.5).astype(int), 2), ['no', 'yes']
    )
    report['binary'] = metrics.binary_metrics(
        labels == 1, scores, positive_name='yes', threshold=0.3
    )
    report |= {'loss': 0.25, 'class_counts': [3, 3]}  # the evaluator's, beside class_metrics
    evaluation.write_report(report, tmp_path / 'eval', 'test')
    assert (tmp_path / 'eval' / 'test_roc.png').read_bytes()[:4] == b'\x89PNG'
    fields = evaluation.summary_fields(report)
    assert fields['positive_class'] == 'yes' and fields['threshold'] == 0.3
    assert fields['test_loss'] == 0.25 and fields['test_accuracy'] == report['accuracy']
    assert fields['test_sensitivity'] == pytest.approx(2 / 3) and fields[
        'test_roc_auc'
    ] == pytest.approx(7 / 9)
    assert decision_threshold(str(tmp_path), 'auto') == ('yes', 0.3)
    assert decision_threshold(str(tmp_path), '0.7') == ('yes', 0.7)
    assert decision_threshold(str(tmp_path), '') is None
    with pytest.raises(app.UsageError, match="--threshold='high'"):
        decision_threshold(str(tmp_path), 'high')
    report.pop('binary')
    (tmp_path / 'eval' / 'test.json').write_text(json.dumps(report))
    with pytest.raises(app.UsageError, match='holds no binary metrics'):
        decision_threshold(str(tmp_path), 'auto')
