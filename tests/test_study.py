"""flaxcnn.study: tiny studies of the glyph smoke config, their database, trial runs and report."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import optuna
import pytest

from flaxcnn.config import from_file
from flaxcnn.studies import report, runner
from flaxcnn.studies.spec import Study, StudyError, choice, default_study, log_uniform, uniform

from helpers import REPO, command_env, final_state

SMOKE_STUDY = REPO / 'configs' / 'studies' / 'smoke.py'
GOOD, FROZEN = 0.003, 1e-12  # learning rates: one learns, one stays at chance (pruned)


def smoke_study(data_dir, **fields) -> ml_collections.ConfigDict:
    """``configs/studies/smoke.py`` reading the session's data, with ``fields`` replaced."""
    study = from_file(SMOKE_STUDY)
    study.overrides = {'dataset': {'data_dir': str(data_dir)}}
    for name, value in fields.items():
        study[name] = value
    return study


def write_study_file(path: pathlib.Path, data_dir, **fields) -> pathlib.Path:
    """A study config file: the smoke study with ``fields`` (Python literals) replaced."""
    lines = ''.join(f'    study.{name} = {value!r}\n' for name, value in fields.items())
    path.write_text(
        'from flaxcnn.config import from_file\n\n\n'
        'def get_config():\n'
        f'    study = from_file({str(SMOKE_STUDY)!r})\n'
        f"    study.overrides = {{'dataset': {{'data_dir': {str(data_dir)!r}}}}}\n"
        f'{lines}'
        '    return study\n'
    )
    return path


def study_command(study_file, workdir) -> list[str]:
    return [sys.executable, '-m', 'flaxcnn.study', f'--study={study_file}', f'--workdir={workdir}']


def run_study(study_file, workdir, succeeds: bool = True) -> subprocess.CompletedProcess:
    """Runs the study command to its end; asserts that it succeeds (or fails)."""
    command = study_command(study_file, workdir)
    out = subprocess.run(
        command,
        cwd=REPO,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert (out.returncode == 0) == succeeds, out.stderr[-3000:]
    return out


def seed_starting_with(study: ml_collections.ConfigDict, first: dict) -> int:
    """A ``sampler_seed`` for which the study's first trial is the point ``first``."""
    for seed in range(100):
        study.sampler_seed = seed
        spec = Study.load(study, name='probe')
        probe = optuna.create_study(sampler=runner.sampler(spec, 0))
        if probe.ask(spec.distributions()).params == first:
            return seed
    raise AssertionError(f'no sampler seed starts the study with {first}')


def load_trials(workdir: pathlib.Path) -> list[optuna.trial.FrozenTrial]:
    name = json.loads((workdir / 'study.json').read_text())['name']
    return optuna.load_study(study_name=name, storage=runner.storage_url(workdir)).trials


def read_csv(path: pathlib.Path) -> list[dict[str, str]]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def finished_study(tmp_path_factory, data_dir) -> pathlib.Path:
    """A finished study of three 2-epoch variants, pruning on, run by the command.

    'learns' runs first; 'frozen' (lr 0) then falls below its median and is pruned; 'broken'
    fails ('imagenet' normalization of 1-channel glyphs) and the study goes on.
    """
    fields = {
        'num_epochs': 2,
        'grid': {},
        'variants': {
            'learns': {'optimizer': {'lr': GOOD}},
            'frozen': {'optimizer': {'lr': FROZEN}},
            'broken': {'input': {'normalization': 'imagenet'}},
        },
        'pruning': {'enabled': True, 'startup_trials': 1, 'warmup': 0},
    }
    fields['sampler_seed'] = seed_starting_with(
        smoke_study(data_dir, **fields), {'variant': 'learns'}
    )
    tmp = tmp_path_factory.mktemp('variants_study')
    workdir = tmp / 'study'
    run_study(write_study_file(tmp / 'variants.py', data_dir, **fields), workdir)
    return workdir


@pytest.mark.slow  # a real study: three training subprocesses
def test_every_variant_runs_once_below_median_is_pruned_and_failure_is_kept(finished_study):
    trials = {t.params['variant']: t for t in load_trials(finished_study)}
    assert sorted(trials) == ['broken', 'frozen', 'learns']  # every point, once
    learns, frozen, broken = trials['learns'], trials['frozen'], trials['broken']
    assert learns.number == 0 and learns.state.name == 'COMPLETE'
    assert frozen.state.name == 'PRUNED'
    assert max(frozen.intermediate_values) < 2  # stopped before its last epoch
    assert not (runner.run_dir(finished_study, frozen.number, 0) / 'summary.json').exists()
    assert broken.state.name == 'FAIL'
    assert 'imagenet' in broken.user_attrs['error']
    log = runner.run_dir(finished_study, broken.number, 0) / 'stderr.log'
    assert 'imagenet' in log.read_text()
    run = runner.run_dir(finished_study, learns.number, 0)  # an ordinary run
    summary = json.loads((run / 'summary.json').read_text())
    assert learns.value == summary['best_valid_accuracy']
    assert (run / 'checkpoints').is_dir() and (run / 'tensorboard').is_dir()
    assert len(runner.read_metrics(run)) == 2
    trial_config = from_file(run / 'config.py')
    assert trial_config.optimizer.lr == GOOD and trial_config.num_epochs == 2


@pytest.mark.slow  # a real study: three training subprocesses
def test_report_lists_every_trial_with_its_state(finished_study):
    out = finished_study / 'report'
    for name in ('leaderboard.md', 'leaderboard.csv', 'curves.png', 'effects.png', 'report.html'):
        assert (out / name).stat().st_size > 0, name
    assert (out / 'size_vs_accuracy.png').stat().st_size > 0
    rows = read_csv(out / 'leaderboard.csv')
    assert [(r['variant'], r['state']) for r in rows] == [
        ('learns', 'complete'),
        ('frozen', 'pruned'),
        ('broken', 'failed'),
    ]
    assert float(rows[0]['test_accuracy']) >= 0 and int(rows[0]['params']) > 0
    assert float(rows[0]['checkpoint_mb']) > 0
    assert 'imagenet' in rows[-1]['error']
    markdown = (out / 'leaderboard.md').read_text()
    assert markdown.count('\n') == 2 + len(rows) and '| complete |' in markdown


@pytest.mark.slow  # a real study: three training subprocesses
def test_report_html_renders_in_chromium(finished_study):
    browser = shutil.which('chromium') or shutil.which('chromium-browser')
    if browser is None:
        pytest.skip("headless check needs Debian's 'chromium' package (apt-get install chromium)")
    page = finished_study / 'report' / 'report.html'
    dom = subprocess.run(
        [browser, '--headless', '--disable-gpu', '--no-sandbox', '--dump-dom', page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded, 'the page script did not run'
    assert loaded[1] == loaded[2] and int(loaded[2]) >= 3  # every picture decoded
    table = re.search(r'<table id="leaderboard">(.*?)</table>', dom, re.DOTALL)[1]
    assert table.count('<tr>') == 1 + 3 and 'pruned' in table


def fake_run(run: pathlib.Path, accuracies: list[float], seconds_per_epoch: float) -> None:
    """A run's metrics.jsonl and summary.json, as ``flaxcnn.train`` writes them."""
    run.mkdir(parents=True)
    with open(run / 'metrics.jsonl', 'w') as f:
        for k, acc in enumerate(accuracies, 1):
            record = {'step': k, 'epoch': float(k), 'valid_accuracy': acc}
            record |= {'elapsed_seconds': k * seconds_per_epoch, 'images_per_second': 100.0}
            f.write(json.dumps(record) + '\n')
    summary = {'best_valid_accuracy': max(accuracies), 'test_accuracy': max(accuracies) - 0.1}
    summary |= {'num_params': 1000, 'images_per_second': 100.0}
    (run / 'summary.json').write_text(json.dumps(summary))


def test_report_averages_seeds_and_draws_the_grid(tmp_path, data_dir):
    spec = Study.load(smoke_study(data_dir, seeds=2), name='fake')
    study = runner.open_study(spec, tmp_path)
    for number in range(spec.num_trials):
        study.sampler = runner.sampler(spec, number)
        trial = study.ask(spec.distributions())
        base = trial.params['optimizer.lr'] * 100 + trial.params['batch_size'] / 1000
        for k, seed in enumerate(spec.seeds):  # seed 1 is 0.1 better; reaches 90% at epoch 2
            accs = [base * 0.5 + 0.1 * k, base * 0.95 + 0.1 * k, base + 0.1 * k]
            fake_run(runner.run_dir(tmp_path, trial.number, seed), accs, 10.0)
        study.tell(trial, base + 0.05)
    report.write(tmp_path)
    rows = read_csv(tmp_path / 'report' / 'leaderboard.csv')
    best = rows[0]
    assert (float(best['optimizer.lr']), int(best['batch_size'])) == (0.003, 64)
    assert float(best['best_valid_accuracy']) == pytest.approx(0.3 + 0.064 + 0.05)
    assert float(best['best_valid_accuracy_std']) == pytest.approx(0.0707, abs=1e-4)
    assert float(best['best_epoch']) == 3 and float(best['seconds_to_90pct']) == 20
    assert best['checkpoint_mb'] == ''  # no checkpoint, no size
    assert (tmp_path / 'report' / 'grid.png').stat().st_size > 0
    assert not (tmp_path / 'report' / 'size_vs_accuracy.png').exists()


def test_search_samples_the_ranges_and_resumes_with_the_same_points(data_dir):
    search = ml_collections.ConfigDict()
    search.sampler = 'tpe'
    search.num_trials = 4
    search.space = {
        'optimizer': {'lr': log_uniform(1e-4, 1e-2), 'weight_decay': uniform(0.0, 0.1)},
        'model_kwargs': {'widths': choice((4, 8, 16), (8, 16, 32))},
    }
    spec = Study.load(smoke_study(data_dir, grid={}, search=search), name='search')
    assert spec.sampler == 'tpe' and spec.num_trials == 4

    def sample(study):
        study.sampler = runner.sampler(spec, len(study.trials))
        trial = study.ask(spec.distributions())
        study.tell(trial, trial.params['optimizer.lr'])
        return spec.values(trial.params, seed=0)

    uninterrupted = optuna.create_study(direction='maximize')
    points = [sample(uninterrupted) for _ in range(4)]
    for values in points:
        assert 1e-4 <= values['optimizer.lr'] <= 1e-2
        assert 0.0 <= values['optimizer.weight_decay'] <= 0.1
        assert values['model_kwargs.widths'] in ((4, 8, 16), (8, 16, 32))
    assert len({v['optimizer.lr'] for v in points}) == 4
    resumed = optuna.create_study(direction='maximize')  # a new process: new samplers
    assert [sample(resumed) for _ in range(4)] == points


@pytest.mark.parametrize(
    'fields, message',
    [
        ({'grid': {'optimizer': {'lrr': (0.1,)}}}, 'study.grid.optimizer.lrr: unknown'),
        ({'grid': {'batch_size': (32.5,)}}, 'study.grid.batch_size=32.5: wrong type float'),
        ({'grid': {'batch_size': ()}}, 'study.grid.batch_size is empty'),
        ({'grid': {}}, 'Nothing to vary'),
        ({'variants': {'half': {'model': 3}}}, "study.variants['half'].model=3: wrong type"),
        ({'overrides': {'nope': 1}}, 'study.overrides.nope: unknown'),
        ({'base_config': 'configs/missing.py'}, "study.base_config='configs/missing.py'"),
    ],
)
def test_bad_study_config_names_the_field(data_dir, fields, message):
    with pytest.raises(StudyError, match=re.escape(message)):
        Study.load(smoke_study(data_dir, **fields), name='bad')


@pytest.mark.parametrize(
    'path', sorted((REPO / 'configs' / 'studies').glob('*.py')), ids=lambda p: p.stem
)
def test_study_configs_check_out(path):
    spec = Study.load(from_file(path), name=path.stem)
    assert spec.num_trials >= 3 and spec.params


def test_unknown_study_field_is_refused():
    study = default_study()
    study.seed = 3
    with pytest.raises(StudyError, match=r"Unknown study field\(s\) \['seed'\]"):
        Study.load(study, name='bad')


def test_workdir_of_another_study_is_refused(tmp_path, data_dir):
    runner.open_study(Study.load(smoke_study(data_dir), name='smoke'), tmp_path)
    other = smoke_study(data_dir, grid={'batch_size': (16, 32)})
    with pytest.raises(StudyError, match=rf'{re.escape(str(tmp_path))} holds a different study'):
        runner.open_study(Study.load(other, name='smoke'), tmp_path)


def test_command_reports_bad_input_before_any_trial(tmp_path, data_dir):
    study_file = write_study_file(tmp_path / 'bad.py', data_dir, grid={'optimizer': {'lrr': (1,)}})
    out = run_study(study_file, tmp_path / 'study', succeeds=False)
    assert 'study.grid.optimizer.lrr: unknown experiment field' in out.stderr
    assert not (tmp_path / 'study').exists()


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume_ends_as_an_uninterrupted_run(tmp_path, data_dir, smoke_run):
    # Trial 1 is the session's smoke run (the smoke config, seed 0, lr 0.002): the reference of
    # an uninterrupted run, bit for bit.
    fields = {'num_epochs': 2, 'grid': {'optimizer': {'lr': (0.001, 0.002)}}}
    fields['sampler_seed'] = seed_starting_with(
        smoke_study(data_dir, **fields), {'optimizer.lr': 0.001}
    )
    study_file = write_study_file(tmp_path / 'kill.py', data_dir, **fields)
    killed = tmp_path / 'killed'
    parent = subprocess.Popen(
        study_command(study_file, killed),
        cwd=REPO,
        env=command_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    second = runner.run_dir(killed, 1, 0) / 'checkpoints'
    deadline = time.monotonic() + 300
    while not (second.is_dir() and any(p.name.isdigit() for p in second.iterdir())):
        assert parent.poll() is None and time.monotonic() < deadline, 'trial 1 never saved'
        time.sleep(0.2)
    os.killpg(parent.pid, signal.SIGKILL)  # the study; its trial dies with it
    parent.wait()
    assert not (runner.run_dir(killed, 1, 0) / 'summary.json').exists()
    assert [t.state.name for t in load_trials(killed)] == ['COMPLETE', 'RUNNING']

    run_study(study_file, killed)
    assert [t.state.name for t in load_trials(killed)] == ['COMPLETE', 'COMPLETE']
    first_log = (runner.run_dir(killed, 0, 0) / 'stdout.log').read_text()
    assert first_log.count('summary.json') == 1  # the finished trial never ran again
    resumed = runner.run_dir(killed, 1, 0)
    assert 'Resuming' in (resumed / 'stderr.log').read_text()
    jax.tree.map(np.testing.assert_array_equal, final_state(resumed), final_state(smoke_run))
    reference = json.loads((smoke_run / 'summary.json').read_text())
    assert load_trials(killed)[1].value == reference['best_valid_accuracy']
    rows = {float(r['optimizer.lr']): r for r in read_csv(killed / 'report' / 'leaderboard.csv')}
    assert float(rows[0.002]['test_accuracy']) == reference['test_accuracy']
