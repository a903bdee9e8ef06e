"""One code path for 1 and N devices: same losses, checkpoints portable across device counts."""

import json

import jax
import numpy as np

from flaxcnn import checkpoint

from conftest import run_smoke


def _records(workdir):
    return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


def _state(workdir, step):
    return checkpoint.read_arrays(workdir / 'checkpoints' / str(step) / 'state')


def _assert_close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5), a, b)


def test_eight_devices_follow_one_and_checkpoints_move_between_them(tmp_path, data_dir):
    one, eight, moved = tmp_path / 'one', tmp_path / 'eight', tmp_path / 'moved'
    run_smoke(one, data_dir, '--config.num_epochs=3')
    out = run_smoke(eight, data_dir, '--config.num_epochs=3', devices=8)
    assert '8 device(s)' in out.stdout
    assert json.loads((eight / 'summary.json').read_text())['num_devices'] == 8
    for a, b in zip(_records(one), _records(eight), strict=True):
        for key in ('train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy'):
            np.testing.assert_allclose(a[key], b[key], rtol=2e-4, atol=1e-5, err_msg=key)
    _assert_close(_state(one, 18), _state(eight, 18))

    run_smoke(moved, data_dir, '--config.num_epochs=1', devices=8)  # 8 devices write,
    run_smoke(moved, data_dir, '--config.num_epochs=2')  # 1 device resumes,
    run_smoke(moved, data_dir, '--config.num_epochs=3', devices=8)  # and 8 again.
    assert [r['step'] for r in _records(moved)] == [6, 12, 18]
    _assert_close(_state(one, 18), _state(moved, 18))


def test_batch_not_divisible_by_devices_is_refused(tmp_path, data_dir):
    out = run_smoke(tmp_path, data_dir, '--config.batch_size=60', devices=8, check=False)
    assert out.returncode != 0
    assert 'batch_size=60 is not divisible by the number of devices (8)' in out.stderr
