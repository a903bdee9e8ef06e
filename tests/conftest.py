"""Shared fixtures: the smoke config with its tiny glyph dataset, and one finished smoke run that
every test reading a trained run shares. Both are made once per test session: the xdist workers
share them (the first worker to need one makes it while the others wait)."""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import tempfile

import filelock
import pytest

from helpers import add_xla_flags, load_config, run_smoke  # imports no jax

# Compiling, not running, is most of a test's time here: the session compiles with fewer XLA
# optimisation passes and shares one compilation cache between its workers and the commands they
# start (the environment reaches them all; it must be set before jax is imported). The tests
# compare runs with each other and with PyTorch within tolerances, never with recorded numbers.
if 'PYTEST_XDIST_WORKER' not in os.environ:  # the controller, or the only process with -n0
    add_xla_flags(
        os.environ, '--xla_backend_optimization_level=0', '--xla_llvm_disable_expensive_passes=true'
    )
    if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
        _cache = tempfile.mkdtemp(prefix='flaxcnn-tests-jax-cache-')
        atexit.register(shutil.rmtree, _cache, ignore_errors=True)
        os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
    os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')


@pytest.fixture(scope='session')
def session_dir(tmp_path_factory) -> pathlib.Path:
    """A folder that every worker of this test session sees."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


@pytest.fixture(scope='session')
def data_dir(session_dir) -> pathlib.Path:
    """A data directory shared by the session's tests (a dataset is prepared once, under
    ``flaxcnn.data.datasets.prepare``'s own lock)."""
    path = session_dir / 'datasets'
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def smoke_config(data_dir):
    """``configs/glyph_smoke.py`` reading its data from the session's data directory."""
    config = load_config('glyph_smoke')
    config.dataset.data_dir = str(data_dir)
    return config


@pytest.fixture(scope='session')
def smoke_run(session_dir, data_dir) -> pathlib.Path:
    """A workdir holding a finished smoke run, trained once per session by the command line
    (read it only; copy it to change it); what the command printed is in
    ``<workdir>/../stdout.txt``."""
    workdir = session_dir / 'smoke_run' / 'run'
    with filelock.FileLock(session_dir / 'smoke_run.lock'):
        if not (workdir / 'summary.json').exists():
            out = run_smoke(workdir, data_dir)
            (workdir.parent / 'stdout.txt').write_text(out.stdout)
    return workdir
