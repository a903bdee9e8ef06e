"""One code path for 1 and N devices or processes: same losses, checkpoints portable between them."""

import json
import os
import socket
import subprocess

import jax
import numpy as np
import pytest

from flaxcnn import checkpoint

from helpers import REPO, records as _records, run_smoke, smoke_command

pytestmark = pytest.mark.slow  # simulated devices and several processes, in subprocesses


def _state(workdir, step):
    return checkpoint.read_arrays(workdir / 'checkpoints' / str(step) / 'state')


def _assert_close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5), a, b)


@pytest.fixture(scope='module')
def one(tmp_path_factory, data_dir):
    """A 3-epoch smoke run on one device in one process: the reference."""
    workdir = tmp_path_factory.mktemp('one')
    run_smoke(workdir, data_dir, '--config.num_epochs=3')
    return workdir


def test_eight_devices_follow_one_and_checkpoints_move_between_them(one, tmp_path, data_dir):
    eight, moved = tmp_path / 'eight', tmp_path / 'moved'
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one_and_one_process_resumes_their_checkpoint(tmp_path, data_dir):
    one, two = tmp_path / 'one', tmp_path / 'two'
    run_smoke(one, data_dir, '--config.num_epochs=3')
    address = f'127.0.0.1:{_free_port()}'
    # A budget never reached: the processes still agree on process 0's clock at every step.
    args = ('--config.num_epochs=2', '--config.time_budget_s=3600')
    procs = []
    for process_id in range(2):
        env = {**os.environ, 'JAX_COORDINATOR_ADDRESS': address, 'JAX_NUM_PROCESSES': '2'}
        if process_id == 0:  # process 0 from config fields, process 1 from the environment
            command = smoke_command(two, data_dir, *args, '--config.distributed.process_id=0')
        else:
            command = smoke_command(two, data_dir, *args)
            env['JAX_PROCESS_ID'] = '1'
        procs.append(
            subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert '2 device(s) in 2 process(es)' in outs[0][0]
    assert 'best valid' not in outs[1][0]  # only process 0 reports,
    assert [r['step'] for r in _records(two)] == [6, 12]  # and logs, once.
    assert json.loads((two / 'summary.json').read_text())['num_processes'] == 2

    run_smoke(two, data_dir, '--config.num_epochs=3')  # one process resumes the checkpoint
    assert [r['step'] for r in _records(two)] == [6, 12, 18]
    for a, b in zip(_records(one), _records(two), strict=True):
        for key in ('train_loss', 'valid_loss', 'valid_accuracy'):
            np.testing.assert_allclose(a[key], b[key], rtol=2e-4, atol=1e-5, err_msg=key)
    _assert_close(_state(one, 18), _state(two, 18))
