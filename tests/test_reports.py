"""Per-class metrics, confusion-matrix reports, and the evaluate and sizes commands."""

import json
import subprocess
import sys

import numpy as np
import pytest

from flaxcnn import evaluation, sizes

from conftest import REPO


def test_class_metrics_from_a_confusion_matrix():
    confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])  # rows: true, columns: predicted
    m = evaluation.class_metrics(confusion, ['a', 'b', 'c'])
    assert m['accuracy'] == pytest.approx(11 / 14)
    assert m['per_class']['a'] == {'precision': pytest.approx(8 / 9), 'recall': 0.8, 'support': 10}
    assert m['per_class']['b']['recall'] == pytest.approx(0.75)
    assert m['per_class']['b']['precision'] == pytest.approx(0.6)
    assert m['macro_recall'] == pytest.approx((0.8 + 0.75) / 2)  # classes without support skipped
    assert m['per_class']['c'] == {'precision': 0.0, 'recall': 0.0, 'support': 0}


def test_write_report_writes_json_and_png(tmp_path):
    m = evaluation.class_metrics(np.array([[3, 1], [0, 4]]), ['NORMAL', 'PNEUMONIA'])
    evaluation.write_report(m, tmp_path / 'eval', 'test')
    assert json.loads((tmp_path / 'eval' / 'test.json').read_text())['confusion'] == [
        [3, 1],
        [0, 4],
    ]
    assert (tmp_path / 'eval' / 'test.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not list((tmp_path / 'eval').glob('*.tmp'))


def test_training_writes_validation_and_test_reports(smoke_run):
    test = json.loads((smoke_run / 'eval' / 'test.json').read_text())
    summary = json.loads((smoke_run / 'summary.json').read_text())
    assert test['accuracy'] == pytest.approx(summary['test_accuracy'])
    assert len(test['class_names']) == 52
    assert np.sum(test['confusion']) == 52 * 2  # every test image once
    assert (smoke_run / 'eval' / 'validation.png').exists()


def test_evaluate_command_reproduces_the_summary(smoke_run):
    out = subprocess.run(
        [sys.executable, '-m', 'flaxcnn.evaluate', f'--workdir={smoke_run}'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((smoke_run / 'summary.json').read_text())
    assert f'accuracy {summary["test_accuracy"]:.2%}' in out.stdout


def test_evaluate_names_a_workdir_without_a_run(tmp_path):
    out = subprocess.run(
        [sys.executable, '-m', 'flaxcnn.evaluate', f'--workdir={tmp_path}'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    assert 'No checkpoint in' in out.stderr and str(tmp_path) in out.stderr


def test_sizes_row_and_chart(smoke_run, tmp_path):
    row = sizes.run_sizes(smoke_run)
    summary = json.loads((smoke_run / 'summary.json').read_text())
    assert row['model'] == 'mynet_v2' and row['params'] == summary['num_params']
    assert row['param_mb'] == pytest.approx(row['params'] * 4 / 2**20)
    # Adam keeps two moments per parameter: the full state is about three times the model.
    assert 2.0 < row['checkpoint_full_mb'] / row['checkpoint_model_mb'] < 4.0
    assert row['test_accuracy'] == summary['test_accuracy']
    sizes._plot([row, row], str(tmp_path / 'sizes.png'))
    assert (tmp_path / 'sizes.png').stat().st_size > 1000
