"""The training loop and the command line, on the smoke config."""

import json

import pytest

from flaxcnn import steps, training

from helpers import records

SUMMARY_KEYS = {
    'best_valid_accuracy',
    'test_accuracy',
    'epochs_completed',
    'train_seconds',
    'images_per_second',
    'num_devices',
    'compile_seconds',
    'dataset_seconds',
    'peak_rss_mb',
}


def test_time_budget_stops_training_with_the_step_compiled_once(
    smoke_config, tmp_path, monkeypatch
):
    traces = []
    make = steps.make_train_step

    def counting_make(*args, **kwargs):
        fn = make(*args, **kwargs)

        def traced(*a):
            traces.append(1)
            return fn(*a)

        return traced

    monkeypatch.setattr(steps, 'make_train_step', counting_make)
    smoke_config.num_epochs = 1000
    smoke_config.time_budget_s = 2.0
    smoke_config.schedule.name = 'time_linear'
    summary = training.train_and_evaluate(smoke_config, tmp_path)
    assert len(traces) == 1  # over several epochs: compiled once, never retraced
    assert summary['stopped_by'] == 'time_budget'
    assert 2.0 <= summary['train_seconds'] < 10.0
    assert 0 < summary['epochs_completed'] < 1000
    last = records(tmp_path)[-1]  # the rate decays linearly to zero at the end of the budget
    expected = smoke_config.optimizer.lr * max(0.0, 1 - last['elapsed_seconds'] / 2.0)
    assert last['learning_rate'] == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert last['learning_rate'] < smoke_config.optimizer.lr


def test_cli_smoke_run_writes_metrics_checkpoints_and_summary(smoke_run):
    summary = json.loads((smoke_run / 'summary.json').read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary['epochs_completed'] == 2 and summary['num_devices'] == 1
    assert summary['stopped_by'] == 'epochs' and summary['steps'] == 12
    assert 'glyphs mynet_v2: best valid' in (smoke_run.parent / 'stdout.txt').read_text()
    epochs = records(smoke_run)
    assert [r['epoch'] for r in epochs] == [1.0, 2.0]
    assert epochs[1]['train_loss'] < epochs[0]['train_loss'] - 0.2  # the steps learn
    assert {
        'train_loss',
        'train_accuracy',
        'valid_loss',
        'valid_accuracy',
        'learning_rate',
        'images_per_second',
        'elapsed_seconds',
    } <= epochs[0].keys()
    assert epochs[-1]['elapsed_seconds'] == summary['train_seconds']
    assert list((smoke_run / 'tensorboard').glob('events.out.tfevents.*'))
    assert (smoke_run / 'checkpoints').is_dir()
