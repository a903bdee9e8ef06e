"""One code path for 1 and N devices or processes: same losses, checkpoints portable between them."""

import json
import socket
import subprocess

import jax
import numpy as np
import pytest

from flaxcnn import checkpoint, training

from helpers import REPO, command_env, records as _records, run_smoke, smoke_command

pytestmark = pytest.mark.slow  # simulated devices and several processes, in subprocesses


def _state(workdir, step):
    return checkpoint.read_arrays(workdir / 'checkpoints' / str(step) / 'state')


def _assert_close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5), a, b)


EPOCH_KEYS = ('train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy')


def _assert_follows(one, other, keys=EPOCH_KEYS):
    """``other``'s epochs and final state are ``one``'s (both 2-epoch smoke runs)."""
    assert [r['step'] for r in _records(other)] == [6, 12]
    for a, b in zip(_records(one), _records(other), strict=True):
        for key in keys:
            np.testing.assert_allclose(a[key], b[key], rtol=2e-4, atol=1e-5, err_msg=key)
    _assert_close(_state(one, 12), _state(other, 12))


def test_eight_devices_follow_one_and_checkpoints_move_between_them(
    smoke_run, smoke_config, tmp_path, data_dir
):
    # The session's smoke run (one device) is the reference; each of the other two runs trains
    # one epoch on 8 devices and one on 1 device (in this process), from the other's checkpoint.
    eight_first, one_first = tmp_path / 'eight_first', tmp_path / 'one_first'
    out = run_smoke(eight_first, data_dir, '--config.num_epochs=1', devices=8)  # 8 devices write,
    assert '8 device(s)' in out.stdout
    assert json.loads((eight_first / 'summary.json').read_text())['num_devices'] == 8
    training.train_and_evaluate(smoke_config, eight_first)  # and 1 device resumes;
    _assert_follows(smoke_run, eight_first)

    smoke_config.num_epochs = 1
    training.train_and_evaluate(smoke_config, one_first)  # 1 device writes,
    run_smoke(one_first, data_dir, devices=8)  # and 8 devices resume.
    assert json.loads((one_first / 'summary.json').read_text())['num_devices'] == 8
    _assert_follows(smoke_run, one_first)


def test_batch_not_divisible_by_devices_is_refused(tmp_path, data_dir):
    out = run_smoke(tmp_path, data_dir, '--config.batch_size=60', devices=8, check=False)
    assert out.returncode != 0
    assert 'batch_size=60 is not divisible by the number of devices (8)' in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one_and_one_process_resumes_their_checkpoint(
    smoke_run, smoke_config, tmp_path, data_dir
):
    two = tmp_path / 'two'
    address = f'127.0.0.1:{_free_port()}'
    # A budget never reached: the processes still agree on process 0's clock at every step.
    args = ('--config.num_epochs=1', '--config.time_budget_s=3600')
    procs = []
    for process_id in range(2):
        env = {**command_env(), 'JAX_COORDINATOR_ADDRESS': address, 'JAX_NUM_PROCESSES': '2'}
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
    assert [r['step'] for r in _records(two)] == [6]  # and logs, once.
    assert json.loads((two / 'summary.json').read_text())['num_processes'] == 2

    training.train_and_evaluate(smoke_config, two)  # one process resumes the checkpoint
    _assert_follows(smoke_run, two, keys=('train_loss', 'valid_loss', 'valid_accuracy'))
