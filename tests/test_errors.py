"""What a user sees when something they caused or suffered goes wrong: one ``error:`` line and
the exit status (``flaxcnn.cli``), damaged checkpoints set aside (``flaxcnn.checkpoint``), and
the catalogue of bad inputs, command by command."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest
from absl import app

from flaxcnn import checkpoint, cli
from flaxcnn.config import ConfigError

from helpers import REPO, command_env


# ---------------------------------------------------------------- cli.report_errors


def _raising(error: BaseException):
    def main(argv):
        raise error

    return cli.report_errors(main)


@pytest.mark.parametrize(
    'error, status',
    [
        (ConfigError('config.batch_size=0 is not allowed'), 2),
        (app.UsageError('Give at least one image'), 2),
        (FileNotFoundError('Dataset folder /x does not exist.'), 1),
        (FloatingPointError('Training diverged'), 1),
        (checkpoint.RunMismatchError('/w holds a run with model=...'), 1),
    ],
)
def test_a_user_error_is_one_line_and_its_status(error, status, capsys, monkeypatch):
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_:
        _raising(error)(['prog'])
    assert exit_.value.code == status
    assert capsys.readouterr().err == f'error: {error}\n'


def test_the_traceback_of_a_user_error_is_shown_on_request(capsys, monkeypatch):
    monkeypatch.setenv(cli.TRACEBACK_ENV, '1')
    with pytest.raises(SystemExit):
        _raising(ConfigError('config.batch_size=0'))(['prog'])
    err = capsys.readouterr().err
    assert 'Traceback (most recent call last)' in err and err.endswith(
        'error: config.batch_size=0\n'
    )


def test_a_bug_keeps_its_exception():
    with pytest.raises(ZeroDivisionError):
        _raising(ZeroDivisionError('division by zero'))(['prog'])


@pytest.mark.slow
def test_every_command_module_imports_into_one_process():
    """They share --config and --workdir (a notebook, or these tests, imports several)."""
    code = 'import flaxcnn.train, flaxcnn.evaluate, flaxcnn.predict, flaxcnn.lr_find, flaxcnn.study'
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------- damaged checkpoints


def _damage_meta(step_dir: pathlib.Path) -> None:
    path = step_dir / 'meta' / 'metadata'
    data = path.read_bytes()
    path.write_bytes(data[:50] + b'\x00garbled\x00' + data[60:])  # a bad copy's hole


def _damage_array(step_dir: pathlib.Path) -> None:
    """Every array data file of the OCDBT store truncated (a reader of the params alone rightly
    ignores damage to the optimizer state's, so every file is hit)."""
    for path in (step_dir / 'state').glob('**/d/*'):  # the process's store and the merged one
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _damage_manifest(step_dir: pathlib.Path) -> None:
    path = step_dir / 'state' / 'manifest.ocdbt'
    path.write_bytes(path.read_bytes()[:40])  # truncated


DAMAGE = {'meta': _damage_meta, 'array': _damage_array, 'manifest': _damage_manifest}


@pytest.fixture
def run_copy(smoke_run, tmp_path) -> pathlib.Path:
    """A copy of the session's smoke run, free to damage."""
    return pathlib.Path(shutil.copytree(smoke_run, tmp_path / 'run'))


def _steps(workdir: pathlib.Path) -> list[int]:
    ckpts = checkpoint.Checkpoints(workdir, read_only=True)
    try:
        return sorted(ckpts.manager.all_steps())
    finally:
        ckpts.close()


@pytest.mark.parametrize('kind', sorted(DAMAGE))
def test_a_damaged_best_checkpoint_is_set_aside_and_the_next_best_read(kind, run_copy, capsys):
    best = json.loads((run_copy / 'summary.json').read_text())['best_step']
    steps = _steps(run_copy)
    DAMAGE[kind](run_copy / 'checkpoints' / str(best))
    run = checkpoint.load_run(run_copy)
    assert run.step != best and run.step in steps
    aside = run_copy / checkpoint.DAMAGED_DIR / str(best)
    assert aside.is_dir() and not (run_copy / 'checkpoints' / str(best)).exists()
    assert best not in _steps(run_copy)  # Orbax no longer lists it
    err = capsys.readouterr().err
    assert f'Checkpoint step {best} at {run_copy / "checkpoints" / str(best)} cannot be read' in err
    assert f'Continuing from step {run.step}, the best intact checkpoint.' in err


def test_with_no_intact_checkpoint_the_message_says_how_to_start_over(run_copy):
    saved = _steps(run_copy)
    for step in saved:
        _damage_meta(run_copy / 'checkpoints' / str(step))
    with pytest.raises(checkpoint.NoIntactCheckpointError, match='No intact checkpoint') as error:
        checkpoint.load_run(run_copy)
    assert 'To start over, re-run the training command' in str(error.value)
    assert _steps(run_copy) == []  # all set aside, none deleted
    assert len(list((run_copy / checkpoint.DAMAGED_DIR).iterdir())) == len(saved)


def test_a_mismatched_run_is_not_taken_for_damage(run_copy):
    """An intact checkpoint that the reader rejects is re-raised and left where it is."""

    def read(step):
        raise checkpoint.RunMismatchError(f'step {step} is of another run')

    ckpts = checkpoint.Checkpoints(run_copy)
    try:
        with pytest.raises(checkpoint.RunMismatchError, match='of another run'):
            ckpts.read_intact(read)
    finally:
        ckpts.close()
    assert not (run_copy / checkpoint.DAMAGED_DIR).exists()


# ---------------------------------------------------------------- the bad-input catalogue


def _train(parent, data_dir, *overrides, config='configs/glyph_smoke.py'):
    """``flaxcnn.train`` in ``<parent>/run``."""
    return [
        'flaxcnn.train',
        f'--config={config}',
        f'--workdir={parent / "run"}',
        f'--config.dataset.data_dir={data_dir}',
        *overrides,
    ]


def _copy(smoke_run, tmp_path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(smoke_run, tmp_path / 'run', dirs_exist_ok=True))


def _damaged(smoke_run, tmp_path, which: str) -> pathlib.Path:
    """A copy of the smoke run with its ``'latest'`` or ``'best'`` checkpoint, or ``'all'`` of
    them, damaged."""
    workdir = _copy(smoke_run, tmp_path)
    saved = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
    best = json.loads((workdir / 'summary.json').read_text())['best_step']
    for step in {'latest': saved[-1:], 'best': [best], 'all': saved}[which]:
        _damage_manifest(workdir / 'checkpoints' / str(step))
    return workdir


def _image(tmp_path, content: bytes) -> str:
    path = tmp_path / 'image.png'
    path.write_bytes(content)
    return str(path)


def _case(id, command, fragment, status, *, slow=True):
    """A catalogue row: ``command(tmp_path, smoke_run, data_dir)`` gives the arguments after
    ``python -m``, ``smoke_run()`` the session's finished run (trained only if a row asks).
    The fast subset runs only the rows that nothing else there checks (``slow=False``): each
    command's start-up runs in test_reports, its error line and status in-process above."""
    return pytest.param(command, fragment, status, id=id, marks=[pytest.mark.slow] if slow else [])


# (id, override of the smoke config, message fragment): usage errors, exit status 2
BAD_CONFIGS = [
    (
        'config-batch_size=0',
        '--config.batch_size=0',
        'error: config.batch_size=0 is not allowed: expected an integer > 0',
    ),
    (
        'config-lr=-1',
        '--config.optimizer.lr=-1',
        'error: config.optimizer.lr=-1.0 is not allowed: expected a number > 0',
    ),
    (
        'config-unknown-field',
        '--config.optimizer.betas=1',
        "error: --config.optimizer.betas: the config has no field 'betas'",
    ),
    (
        'config-unknown-model',
        '--config.model=mynet_v3',
        "error: config.model='mynet_v3' is not allowed: expected one of 'basic_cnn'",
    ),
    (
        'config-unknown-optimizer',
        '--config.optimizer.name=rmsprop',
        "error: config.optimizer.name='rmsprop' is not allowed",
    ),
    ('config-bad-flag-value', '--config.batch_size=abc', 'error: flag --config.batch_size=abc'),
]


def _empty_class_folder(tmp_path):
    """A Fruits-360 layout whose only training class folder holds no file."""
    root = tmp_path / 'fruits'
    (root / 'Training' / 'apple').mkdir(parents=True)
    (root / 'Test' / 'apple').mkdir(parents=True)
    return root


CATALOGUE = [
    *(
        # The fast subset keeps the one row that only the command line checks (the flag parser);
        # test_configs checks every rule of ``validate`` in-process.
        _case(
            id,
            lambda t, r, d, o=override: _train(t, d, o),
            fragment,
            2,
            slow=id != 'config-unknown-field',
        )
        for id, override, fragment in BAD_CONFIGS
    ),
    _case(
        'data-missing-folder',
        lambda t, r, d: _train(
            t, d, f'--config.dataset.folder={t / "nowhere"}', config='configs/fruits_cnn.py'
        ),
        'Dataset folder {t}/nowhere does not exist',
        1,
    ),
    _case(
        'data-empty-class-folder',
        lambda t, r, d: _train(
            t,
            d,
            f'--config.dataset.folder={_empty_class_folder(t)}',
            config='configs/fruits_cnn.py',
        ),
        'Class folder {t}/fruits/Training/apple is empty',
        1,
    ),
    _case(
        'workdir-of-another-run',
        lambda t, r, d: _train(_copy(r(), t).parent, d, '--config.model=mynet_v1'),
        "holds a run with model='mynet_v2', but the config asks for model='mynet_v1'",
        1,
    ),
    _case(  # also the proof that --config.init.from reaches init.source (cli.FLAG_ALIASES)
        'init-from-nowhere',
        lambda t, r, d: _train(t, d, f'--config.init.from={t / "nowhere"}'),
        'error: init.source={t}/nowhere: neither an imported-weights folder',
        1,
        slow=False,
    ),
    _case(
        'workdir-not-a-run',
        lambda t, r, d: ['flaxcnn.evaluate', f'--workdir={t / "nowhere"}'],
        'error: No checkpoint in',
        1,
    ),
    _case(
        'checkpoint-damaged-resume',
        lambda t, r, d: _train(_damaged(r(), t, 'latest').parent, d),
        'the newest intact checkpoint',
        0,
    ),
    _case(
        'checkpoint-damaged-evaluate',
        lambda t, r, d: ['flaxcnn.evaluate', f'--workdir={_damaged(r(), t, "best")}'],
        'the best intact checkpoint',
        0,
    ),
    _case(
        'checkpoint-none-intact',
        lambda t, r, d: ['flaxcnn.evaluate', f'--workdir={_damaged(r(), t, "all")}'],
        'error: No intact checkpoint is left',
        1,
    ),
    _case(
        'predict-unreadable-image',
        lambda t, r, d: ['flaxcnn.predict', f'--workdir={r()}', _image(t, b'not a png')],
        'cannot read this image',
        1,
    ),
    _case(
        'predict-no-images',
        lambda t, r, d: ['flaxcnn.predict', f'--workdir={t}'],
        'error: Give at least one image',
        2,
    ),
]


@pytest.mark.parametrize('command, fragment, status', CATALOGUE)
def test_bad_input_catalogue(command, fragment, status, tmp_path, request, data_dir):
    def smoke_run():
        return request.getfixturevalue('smoke_run')

    out = subprocess.run(
        [sys.executable, '-m', *command(tmp_path, smoke_run, data_dir)],
        cwd=REPO,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == status, out.stderr[-3000:]
    assert fragment.format(t=tmp_path) in out.stderr, out.stderr[-3000:]
    assert 'Traceback' not in out.stderr, out.stderr[-3000:]
