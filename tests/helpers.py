"""Helpers shared by the tests: the smoke config, its command line, and a tiny train state."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from flaxcnn.config import from_file

REPO = pathlib.Path(__file__).resolve().parents[1]
WITHOUT_TORCH = pathlib.Path(__file__).resolve().with_name('without_torch')


def slow_case(*values):
    """A parametrize case that only the full suite runs: one case per code path stays in the
    fast subset (``-m "not slow"``), the edge cases and sizes around it are checked here."""
    return pytest.param(*values, marks=pytest.mark.slow)


def load_config(name: str):
    """``configs/<name>.py``'s ``get_config()``, as ``--config`` would load it."""
    return from_file(REPO / 'configs' / f'{name}.py')


def smoke_command(workdir, data_dir, *overrides) -> list[str]:
    """The training command line for the smoke config in ``workdir``."""
    return [
        sys.executable,
        '-m',
        'flaxcnn.train',
        '--config=configs/glyph_smoke.py',
        f'--workdir={workdir}',
        f'--config.dataset.data_dir={data_dir}',
        *overrides,
    ]


def command_env(devices: int | None = None) -> dict[str, str]:
    """The environment for a flaxcnn command a test starts: flaxcnn as a user installs it,
    without PyTorch (a test-only dependency that tensorboardX imports whenever it is installed,
    at every command's start), on ``devices`` simulated CPU devices if given."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(WITHOUT_TORCH), env.get('PYTHONPATH')]))
    if devices:
        add_xla_flags(env, f'--xla_force_host_platform_device_count={devices}')
    return env


def add_xla_flags(env, *flags: str) -> None:
    """Appends ``flags`` to ``env['XLA_FLAGS']``, keeping the flags already there."""
    env['XLA_FLAGS'] = ' '.join(filter(None, [env.get('XLA_FLAGS'), *flags]))


def run_smoke(
    workdir, data_dir, *overrides, check: bool = True, devices: int | None = None
) -> subprocess.CompletedProcess:
    """Runs ``smoke_command`` to completion (on ``devices`` simulated CPU devices if given)."""
    out = subprocess.run(
        smoke_command(workdir, data_dir, *overrides),
        cwd=REPO,
        env=command_env(devices),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def records(workdir: pathlib.Path) -> list[dict]:
    """The run's ``metrics.jsonl``, one dict per epoch."""
    return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


def saved_steps(workdir: pathlib.Path) -> list[int]:
    """Steps of the run's complete checkpoints, in order (none yet: empty)."""
    return sorted(int(p.name) for p in (workdir / 'checkpoints').glob('*') if p.name.isdigit())


def final_state(workdir: pathlib.Path):
    """(step, state as host arrays) of the run's latest complete checkpoint."""
    from flaxcnn import checkpoint

    last = saved_steps(workdir)[-1]
    return last, checkpoint.read_arrays(workdir / 'checkpoints' / str(last) / 'state')


def tiny_train_state(config, seed: int = 0):
    """(train graphdef, optimizer, state) of a narrow MyNet v2 on 32x32 glyphs, built by ``config``,
    its weights and random key drawn from ``seed``."""
    from flaxcnn import models, optim, steps

    from helpers_models import quick_rngs

    model = models.create_model(
        'mynet_v2',
        num_classes=52,
        in_channels=1,
        image_size=32,
        rngs=quick_rngs(seed),
        widths=(8, 16, 32),
    )
    tx = optim.create_optimizer(config)
    graphdef, _, state = steps.create_train_state(model, tx, seed=seed)
    return graphdef, tx, state
