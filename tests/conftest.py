"""Shared fixtures: the smoke config with its tiny glyph dataset prepared once per session."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from flaxcnn.config import from_file

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(name: str):
    """``configs/<name>.py``'s ``get_config()``, as ``--config`` would load it."""
    return from_file(REPO / 'configs' / f'{name}.py')


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> pathlib.Path:
    """A data directory shared by the session's tests (datasets are prepared once)."""
    return tmp_path_factory.mktemp('datasets')


@pytest.fixture
def smoke_config(data_dir):
    """``configs/glyph_smoke.py`` reading its data from the session's data directory."""
    config = load_config('glyph_smoke')
    config.dataset.data_dir = str(data_dir)
    return config


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


def run_smoke(
    workdir, data_dir, *overrides, check: bool = True, devices: int | None = None
) -> subprocess.CompletedProcess:
    """Runs ``smoke_command`` to completion (on ``devices`` simulated CPU devices if given)."""
    env = dict(os.environ)
    if devices:
        env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
    out = subprocess.run(
        smoke_command(workdir, data_dir, *overrides),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope='session')
def smoke_run(tmp_path_factory, data_dir) -> pathlib.Path:
    """A workdir holding a finished smoke run (trained once per session)."""
    from flaxcnn.trainer import Trainer

    config = load_config('glyph_smoke')
    config.dataset.data_dir = str(data_dir)
    workdir = tmp_path_factory.mktemp('smoke_run')
    Trainer(config, workdir).run()
    return workdir


def tiny_train_state(config, seed: int = 0):
    """(train graphdef, optimizer, state) of a narrow MyNet v2 on 32x32 glyphs, built by ``config``."""
    from flax import nnx

    from flaxcnn import models, optim, steps

    model = models.create_model(
        'mynet_v2',
        num_classes=52,
        in_channels=1,
        image_size=32,
        rngs=nnx.Rngs(0),
        widths=(8, 16, 32),
    )
    tx = optim.create_optimizer(config)
    graphdef, _, state = steps.create_train_state(model, tx, seed=seed)
    return graphdef, tx, state
