"""Shared fixtures: the smoke config with its tiny glyph dataset prepared once per session, and
one finished smoke run that every test reading a trained run shares."""

from __future__ import annotations

import pathlib

import pytest

from helpers import load_config, run_smoke


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


@pytest.fixture(scope='session')
def smoke_run(tmp_path_factory, data_dir) -> pathlib.Path:
    """A workdir holding a finished smoke run, trained once per session by the command line;
    what the command printed is in ``<workdir>/../stdout.txt``."""
    workdir = tmp_path_factory.mktemp('smoke_run') / 'run'
    out = run_smoke(workdir, data_dir)
    (workdir.parent / 'stdout.txt').write_text(out.stdout)
    return workdir
