"""Runs a study's trials as ``flaxcnn.train`` processes, asked from and told to Optuna.

One Optuna trial is one point of the study: its runs (one per seed) train one after another in
``<workdir>/trials/<number>/seed_<seed>/``, each an ordinary run with its own ``config.py``.
The parent follows the first seed's ``metrics.jsonl``, reports its validation accuracy to
Optuna and kills the run when the pruner says so. Everything the study knows is in its
workdir: ``study.db`` (Optuna, SQLite), ``study.json`` (what the study is) and the runs, so
re-running the command resumes: finished trials stay, interrupted ones (still RUNNING in the
database) restart in their own folders and each run resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.trial import TrialState

from flaxcnn.studies.spec import Study, StudyError

POLL_SECONDS = 0.5
ERROR_LINES = 15  # stderr lines kept with a failed trial in the database


def write_atomic(path: pathlib.Path, data: str | bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = 'wb' if isinstance(data, bytes) else 'w'
    with tempfile.NamedTemporaryFile(
        mode, dir=path.parent, prefix=f'.{path.name}', delete=False
    ) as f:
        f.write(data)
    os.replace(f.name, path)


def storage_url(workdir: pathlib.Path) -> str:
    """The study's Optuna storage; ``optuna-dashboard sqlite:///<workdir>/study.db`` opens it."""
    return f'sqlite:///{(workdir / "study.db").absolute()}'


def trial_dir(workdir: pathlib.Path, number: int) -> pathlib.Path:
    return workdir / 'trials' / f'{number:04d}'


def run_dir(workdir: pathlib.Path, number: int, seed: int) -> pathlib.Path:
    return trial_dir(workdir, number) / f'seed_{seed}'


def read_metrics(run: pathlib.Path) -> list[dict[str, Any]]:
    """The complete records of a run's ``metrics.jsonl`` (one per epoch), as far as written."""
    try:
        text = (run / 'metrics.jsonl').read_text(encoding='utf-8')
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith('\n')]


def read_summary(run: pathlib.Path) -> dict[str, Any] | None:
    """A finished run's ``summary.json``, or None."""
    try:
        return json.loads((run / 'summary.json').read_text(encoding='utf-8'))
    except FileNotFoundError:
        return None


def open_study(spec: Study, workdir: pathlib.Path) -> optuna.Study:
    """The study's Optuna study in ``workdir``, created on first use; refuses another study."""
    record = workdir / 'study.json'
    if record.exists():
        saved = json.loads(record.read_text(encoding='utf-8'))
        if saved['digest'] != spec.digest:
            changed = _changed_fields(saved['identity'], spec.identity)
            raise StudyError(
                f'{workdir} holds a different study ({saved["name"]!r}; changed: '
                f'{", ".join(changed) or "?"}). Use another --workdir, or the same study config '
                'to resume it.'
            )
    else:
        if (workdir / 'study.db').exists() or (workdir / 'trials').exists():
            raise StudyError(f'{workdir} holds trials but no study.json: not a study workdir.')
        write_atomic(
            record,
            json.dumps(
                {
                    'name': spec.name,
                    'digest': spec.digest,
                    'base_config': spec.base_config,
                    'params': list(spec.params),
                    'identity': spec.identity,
                },
                indent=2,
            )
            + '\n',
        )
    return optuna.create_study(
        study_name=spec.name,
        storage=storage_url(workdir),
        direction='maximize',
        load_if_exists=True,
    )


def _changed_fields(old: dict, new: dict, prefix: str = '') -> list[str]:
    keys = sorted(set(old) | set(new))
    changed = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_fields(a, b, f'{prefix}{key}.')
        elif a != b:
            changed.append(f'{prefix}{key}')
    return changed


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for ask/tell: its ``after_trial`` calls ``Study.stop``, which
    raises outside ``Study.optimize`` (optuna/optuna#5141); the runner counts trials itself."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def sampler(spec: Study, num_trials_so_far: int) -> optuna.samplers.BaseSampler:
    """The sampler that asks trial number ``num_trials_so_far``.

    Seeded by the trial number, so a resumed study samples what an uninterrupted one would.
    """
    if spec.sampler == 'grid':
        labels = {name: list(p.labels) for name, p in spec.params.items()}
        return _GridSampler(labels, seed=spec.sampler_seed)
    seed = spec.sampler_seed + num_trials_so_far
    if spec.sampler == 'random':
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=spec.startup_trials, seed=seed)


def pruner(spec: Study) -> optuna.pruners.BasePruner:
    if not spec.pruning.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=spec.pruning.startup_trials, n_warmup_steps=spec.pruning.warmup
    )


def progress_steps(spec: Study, records: list[dict[str, Any]]) -> dict[int, float]:
    """Pruning steps (epochs, or whole seconds every ``every_s``) -> validation accuracy.

    By seconds, step ``s`` holds the best accuracy reached by ``s`` training seconds, known
    once a record at or past ``s`` exists, so trials of different speeds compare at equal time.
    """
    if spec.pruning.by == 'epoch':
        return {
            int(r['epoch']): r['valid_accuracy'] for r in records if float(r['epoch']).is_integer()
        }
    steps, every = {}, spec.pruning.every_s
    if not records:
        return steps
    last = records[-1]['elapsed_seconds']
    k = 1
    while k * every <= last:
        reached = [r['valid_accuracy'] for r in records if r['elapsed_seconds'] <= k * every]
        if reached:
            steps[round(k * every)] = max(reached)
        k += 1
    return steps


def visible_gpus() -> list[str]:
    """GPU ids this process may hand out: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
    env = os.environ.get('CUDA_VISIBLE_DEVICES')
    if env is not None:
        return [d.strip() for d in env.split(',') if d.strip() and d.strip() != '-1']
    if shutil.which('nvidia-smi') is None:
        return []
    out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True, check=False)
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith('GPU ')]


def device_envs(parallel: int | None) -> list[dict[str, str]]:
    """One environment per trial slot; with GPUs, each slot gets its own CUDA devices."""
    gpus = visible_gpus()
    parallel = parallel or max(1, len(gpus))
    if parallel < 1:
        raise StudyError(f'--parallel={parallel}: run at least one trial at a time.')
    if not gpus:
        return [{} for _ in range(parallel)]
    if parallel > len(gpus):
        raise StudyError(
            f'--parallel={parallel} but only {len(gpus)} GPU(s) ({",".join(gpus)}): trials '
            'would share devices. Use --parallel <= the number of GPUs.'
        )
    return [{'CUDA_VISIBLE_DEVICES': ','.join(gpus[k::parallel])} for k in range(parallel)]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith('linux'):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


TRIAL_CONFIG = '''"""Trial {number}, seed {seed} of study {name!r}: {base} with the values below.

Re-run or resume it by hand: python -m flaxcnn.train --config={config} --workdir={run}
"""

from flaxcnn.studies.spec import experiment_config

BASE_CONFIG = {base!r}
VALUES = {values!r}


def get_config():
    return experiment_config(BASE_CONFIG, VALUES)
'''


class _TrialRun:
    """One Optuna trial in flight: its seeds' runs, one process at a time."""

    def __init__(self, spec: Study, trial: optuna.Trial, workdir: pathlib.Path, env: dict):
        self.spec, self.trial, self.workdir, self.env = spec, trial, workdir, env
        self.number = trial.number
        self.params = dict(trial.params)
        done = [t for t in trial.study.get_trials(deepcopy=False) if t.number == self.number]
        self.reported = set(done[0].intermediate_values)  # before an interruption
        self.seed_index = 0
        self.process: subprocess.Popen | None = None

    @property
    def label(self) -> str:
        return ', '.join(f'{k}={v}' for k, v in self.params.items())

    @property
    def run(self) -> pathlib.Path:
        return run_dir(self.workdir, self.number, self.spec.seeds[self.seed_index])

    def start(self) -> None:
        """Starts the next seed's run that has not finished (none left: ``process`` is None)."""
        self.process = None
        while self.seed_index < len(self.spec.seeds) and read_summary(self.run) is not None:
            self.seed_index += 1
        if self.seed_index == len(self.spec.seeds):
            return
        run, seed = self.run, self.spec.seeds[self.seed_index]
        config = run / 'config.py'
        text = TRIAL_CONFIG.format(
            number=self.number,
            seed=seed,
            name=self.spec.name,
            base=self.spec.base_config,
            values=self.spec.values(self.params, seed),
            config=config,
            run=run,
        )
        write_atomic(config, text)
        with open(run / 'stdout.log', 'ab') as out, open(run / 'stderr.log', 'ab') as err:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'flaxcnn.train', f'--config={config}', f'--workdir={run}'],
                stdout=out,
                stderr=err,
                env={**os.environ, **self.env},
                start_new_session=True,  # its own process group: pruning kills all of it
                # and a killed study leaves no run behind (the study starts no threads)
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )

    def _should_prune(self) -> bool:
        """Reports the first seed's new pruning steps; True if the pruner says stop."""
        if self.seed_index:
            return False
        steps = progress_steps(self.spec, read_metrics(self.run))
        for step in sorted(set(steps) - self.reported):
            self.trial.report(steps[step], step)
            self.reported.add(step)
            if self.trial.should_prune():
                return True
        return False

    def poll(self) -> tuple[TrialState, float | None] | None:
        """The trial's outcome once it has one, else None (the next seed may have started)."""
        if self.process is None:  # every seed had finished before the study was interrupted
            return self._complete()
        finished = self.process.poll() is not None
        if self._should_prune() and not finished:
            self.kill()
            return TrialState.PRUNED, None
        if not finished:
            return None
        if self.process.returncode != 0:
            self.trial.set_user_attr('error', _last_lines(self.run / 'stderr.log', ERROR_LINES))
            return TrialState.FAIL, None
        self.seed_index += 1
        self.start()
        return None if self.process else self._complete()

    def _complete(self) -> tuple[TrialState, float]:
        runs = [run_dir(self.workdir, self.number, s) for s in self.spec.seeds]
        return TrialState.COMPLETE, statistics.mean(
            read_summary(r)['best_valid_accuracy'] for r in runs
        )

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _last_lines(path: pathlib.Path, n: int) -> str:
    """The last ``n`` non-empty lines of a log, progress-bar redraws dropped."""
    text = path.read_text(encoding='utf-8', errors='replace')
    lines = [line.rsplit('\r', 1)[-1] for line in text.splitlines()]
    return '\n'.join([line for line in lines if line.strip()][-n:])[-4000:]


@contextlib.contextmanager
def _exclusive(workdir: pathlib.Path) -> Iterator[None]:
    """Holds ``<workdir>/study.lock`` (released by the kernel if this process dies)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / 'study.lock', 'w') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyError(f'Another flaxcnn.study is running in {workdir}.') from None
        yield


def _next_trial(spec: Study, study: optuna.Study, interrupted: list[int]) -> optuna.Trial | None:
    """An interrupted trial first (same number, same parameters), else a new one if due."""
    count = len(study.get_trials(deepcopy=False))
    study.sampler = sampler(spec, count)
    if interrupted:
        return optuna.trial.Trial(study, interrupted.pop(0))
    if count < spec.num_trials:
        return study.ask(spec.distributions())
    return None


def run(spec: Study, workdir: str | pathlib.Path, parallel: int | None = None) -> optuna.Study:
    """Runs (or resumes) the study in ``workdir`` until every trial has an outcome."""
    workdir = pathlib.Path(workdir)
    free = device_envs(parallel)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _exclusive(workdir):
        study = open_study(spec, workdir)
        study.pruner = pruner(spec)
        interrupted = [t._trial_id for t in study.get_trials(states=(TrialState.RUNNING,))]
        active: list[_TrialRun] = []
        try:
            while True:
                while free and (trial := _next_trial(spec, study, interrupted)):
                    trial_run = _TrialRun(spec, trial, workdir, free.pop(0))
                    again = ' (resumed)' if trial_dir(workdir, trial.number).exists() else ''
                    print(f'trial {trial.number}{again}: {trial_run.label}', flush=True)
                    trial_run.start()
                    active.append(trial_run)
                if not active:
                    break
                time.sleep(POLL_SECONDS)
                for trial_run in list(active):
                    outcome = trial_run.poll()
                    if outcome is None:
                        continue
                    state, value = outcome
                    study.tell(trial_run.trial, value, state=state)
                    active.remove(trial_run)
                    free.append(trial_run.env)
                    shown = f', best valid accuracy {value:.2%}' if value is not None else ''
                    print(f'trial {trial_run.number}: {state.name.lower()}{shown}', flush=True)
        finally:
            for trial_run in active:
                trial_run.kill()
    return study
