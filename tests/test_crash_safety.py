"""SIGKILL at random moments, mid-save included: every restart resumes from the last complete
checkpoint, never a partial one, and the run ends exactly where an uninterrupted one does."""

import json
import pathlib
import random
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from helpers import REPO, command_env, final_state, records, run_smoke, saved_steps, smoke_command

RUN = ('--config.checkpoint.every_steps=1',)  # the smoke run's 12 steps, each saved
PARTIAL = '.orbax-checkpoint-tmp'  # Orbax writes here, then renames to <step>


def _partial(workdir: pathlib.Path, since: float = 0.0) -> list[str]:
    """Half-written checkpoints (modified after ``since``, a ``time.time()``)."""
    found = (workdir / 'checkpoints').glob(f'*{PARTIAL}*')
    return [p.name for p in found if p.stat().st_mtime >= since]


def _kill(proc, workdir: pathlib.Path, moment: str, rng: random.Random) -> None:
    """SIGKILLs ``proc`` at a random ``moment``: 'start-up' or 'mid-save'."""
    launched = time.time()
    deadline = time.monotonic() + (rng.uniform(0.5, 3.0) if moment == 'start-up' else 60)
    while proc.poll() is None and time.monotonic() < deadline:
        if moment == 'mid-save' and _partial(workdir, since=launched):
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _attempt(run: pathlib.Path, data_dir, log: pathlib.Path, moment: str, rng) -> bool:
    """Starts the smoke run in ``run``, SIGKILLs it at ``moment`` and checks that it resumed (or
    started afresh) from the last complete checkpoint; True if it left a half-written one."""
    resume_from, started = (saved_steps(run) or [None])[-1], time.time()
    with open(log, 'w') as err:
        proc = subprocess.Popen(
            smoke_command(run, data_dir, *RUN), cwd=REPO, env=command_env(), stdout=err, stderr=err
        )
        _kill(proc, run, moment, rng)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    text = log.read_text()
    if resume_from is None:
        assert 'Resuming' not in text
    elif 'Resuming' in text:  # (a kill during start-up may come before it)
        assert f'from step {resume_from}.' in text, text[-3000:]
    return bool(_partial(run, since=started))


@pytest.mark.slow
def test_random_kills_lose_only_unsaved_steps(tmp_path, data_dir, smoke_run):
    reference, run = smoke_run, tmp_path / 'killed'  # uninterrupted, saved less often
    rng = random.Random(0)
    # A kill mid-save proves what a kill between saves does too (the newest complete checkpoint
    # is read, the partial one never); a kill at start-up lands while a resume restores.
    landed_mid_save = _attempt(run, data_dir, tmp_path / 'first.log', 'mid-save', rng)
    _attempt(run, data_dir, tmp_path / 'start-up.log', 'start-up', rng)
    for attempt in range(3):  # a save may complete before its kill lands: try again
        if landed_mid_save:
            break
        landed_mid_save = _attempt(run, data_dir, tmp_path / f'again{attempt}.log', 'mid-save', rng)
    assert landed_mid_save, 'no kill landed mid-save'

    out = run_smoke(run, data_dir, *RUN)
    assert not _partial(run)
    ref_step, ref_state = final_state(reference)
    step, state = final_state(run)
    assert step == ref_step == 12
    jax.tree.map(np.testing.assert_array_equal, state, ref_state)
    summary = json.loads((run / 'summary.json').read_text())
    assert (
        summary['test_accuracy']
        == json.loads((reference / 'summary.json').read_text())['test_accuracy']
    )
    assert [r['step'] for r in records(run)] == [6, 12]
    assert 'best valid' in out.stdout
