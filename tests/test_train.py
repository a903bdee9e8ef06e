"""Train steps, the training loop and the command line, on the smoke config."""

import json

import jax
import numpy as np
import optax
import pytest

from flaxcnn import steps, trainer

from conftest import run_smoke, tiny_train_state

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


def test_train_step_lowers_the_loss_on_a_fixed_batch(smoke_config):
    graphdef, tx, state = tiny_train_state(smoke_config)
    step = jax.jit(
        steps.make_train_step(
            graphdef, tx, optax.constant_schedule(1e-3), mean=(120.0,), std=(60.0,)
        )
    )
    rng = np.random.default_rng(0)
    batch = {
        'image': rng.integers(0, 256, (16, 32, 32, 1), np.uint8),
        'label': rng.integers(0, 52, 16).astype(np.int32),
    }
    losses = []
    for _ in range(15):
        state, metrics = step(state, batch, np.float32(0))
        losses.append(float(metrics['loss'] / metrics['count']))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 15


def test_steps_compile_once_and_never_retrace(smoke_config, tmp_path, monkeypatch):
    traces = []
    make = steps.make_train_step

    def counting_make(*args, **kwargs):
        fn = make(*args, **kwargs)

        def traced(*a):
            traces.append(1)
            return fn(*a)

        return traced

    monkeypatch.setattr(steps, 'make_train_step', counting_make)
    summary = trainer.Trainer(smoke_config, tmp_path).run()
    assert summary['steps'] == 12
    assert len(traces) == 1


def test_time_budget_stops_training(smoke_config, tmp_path):
    smoke_config.num_epochs = 1000
    smoke_config.time_budget_s = 2.0
    smoke_config.schedule.name = 'time_linear'
    summary = trainer.Trainer(smoke_config, tmp_path).run()
    assert summary['stopped_by'] == 'time_budget'
    assert 2.0 <= summary['train_seconds'] < 10.0
    assert 0 < summary['epochs_completed'] < 1000
    records = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    last = records[-1]  # the rate decays linearly to zero at the end of the budget
    expected = smoke_config.optimizer.lr * max(0.0, 1 - last['elapsed_seconds'] / 2.0)
    assert last['learning_rate'] == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert last['learning_rate'] < smoke_config.optimizer.lr


def test_cli_smoke_run_writes_metrics_checkpoints_and_summary(tmp_path, data_dir):
    out = run_smoke(tmp_path, data_dir, '--config.optimizer.lr=0.01', '--config.num_epochs=3')
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary['epochs_completed'] == 3 and summary['num_devices'] == 1
    assert 'glyphs mynet_v2: best valid' in out.stdout
    records = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in records] == [1.0, 2.0, 3.0]
    assert {
        'train_loss',
        'train_accuracy',
        'valid_loss',
        'valid_accuracy',
        'images_per_second',
        'elapsed_seconds',
    } <= records[0].keys()
    assert records[0]['learning_rate'] == pytest.approx(0.01)  # the override took effect
    assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
    assert (tmp_path / 'checkpoints').is_dir()


def test_cli_rejects_unknown_config_fields(tmp_path, data_dir):
    out = run_smoke(tmp_path, data_dir, '--config.optimizer.lrr=0.01', check=False)
    assert out.returncode != 0
    assert 'lrr' in out.stderr
