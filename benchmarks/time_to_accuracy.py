"""Time to 90% and 95% validation accuracy of the glyph recipe, from a fresh run.

Runs ``python -m flaxcnn.train --config=configs/glyph.py`` as a subprocess in a new workdir
with the time budget disabled (``--config.time_budget_s=0``) and a generous epoch count, and
watches its ``metrics.jsonl``: the first epoch record whose ``valid_accuracy`` reaches each
target gives that target's time as ``elapsed_seconds``, the trainer's training clock
(training and the per-epoch validation; no dataset preparation or compilation), plus the
wall time since launch. The run is stopped (its process group terminated) as soon as the last
target is reached, or once ``elapsed_seconds`` passes ``--max-seconds`` (or the wall time
passes ``--max-seconds`` + ``--startup-seconds``).

Validation runs once per epoch (60 steps of batch 512 for the glyph set), so times are at
epoch resolution. ``time_linear`` (the glyph recipe's schedule) decays the rate to zero at
``time_budget_s`` and needs a budget, so with the budget disabled it is replaced by
``constant`` (same Adam lr 0.002) unless ``--config.schedule.name=...`` says otherwise.
Any ``--config.FIELD=VALUE`` is passed through to the trainer.

Commands (from the repository root)::

    .venv/bin/python benchmarks/time_to_accuracy.py
    .venv/bin/python benchmarks/time_to_accuracy.py --config.schedule.name=cosine \\
        --num-epochs 30 --json
    .venv/bin/python benchmarks/time_to_accuracy.py --config configs/glyph_smoke.py \\
        --targets 0.05,0.1 --num-epochs 3 --max-seconds 120      # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]


def _override(passthrough: Sequence[str], field: str) -> str | None:
    prefix = f'--config.{field}='
    values = [a[len(prefix) :] for a in passthrough if a.startswith(prefix)]
    return values[-1] if values else None


def build_command(args, workdir: pathlib.Path, passthrough: list[str]) -> tuple[list[str], str]:
    """The trainer command line and the schedule it will use."""
    from flaxcnn.config import from_file

    schedule = _override(passthrough, 'schedule.name')
    extra = []
    if schedule is None:
        schedule = from_file(REPO / args.config).schedule.name
        if schedule == 'time_linear':  # needs a positive budget; the budget is disabled here
            schedule = 'constant'
            extra.append('--config.schedule.name=constant')
    cmd = [
        sys.executable,
        '-m',
        'flaxcnn.train',
        f'--config={args.config}',
        f'--workdir={workdir}',
        '--config.time_budget_s=0',
        f'--config.num_epochs={args.num_epochs}',
        *extra,
        *passthrough,
    ]
    return cmd, schedule


def _read_records(path: pathlib.Path, done: int) -> list[dict[str, Any]]:
    """Complete JSON lines of ``path`` after the first ``done``."""
    if not path.exists():
        return []
    lines = path.read_text(encoding='utf-8').splitlines(keepends=True)
    return [json.loads(line) for line in lines[done:] if line.endswith('\n')]


def _stop(proc: subprocess.Popen) -> None:
    """Terminates the trainer's process group (it and its grain workers)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def run(args, passthrough: list[str]) -> dict[str, Any]:
    targets = sorted(float(t) for t in args.targets.split(','))
    workdir = pathlib.Path(
        args.workdir or tempfile.mkdtemp(prefix='flaxcnn_time_to_accuracy_')
    ).resolve()
    metrics_path = workdir / 'metrics.jsonl'
    if metrics_path.exists():
        raise SystemExit(f'{workdir} already holds a run; a resumed run would mix up the times.')
    workdir.mkdir(parents=True, exist_ok=True)
    cmd, schedule = build_command(args, workdir, passthrough)
    log_path = workdir / 'train.log'
    print(f'# {" ".join(cmd)}', file=sys.stderr)
    print(f'# schedule {schedule}; log: {log_path}', file=sys.stderr, flush=True)
    reached: dict[float, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    stopped_by = None
    start = time.perf_counter()
    with open(log_path, 'w', encoding='utf-8') as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while stopped_by is None:
                exited = proc.poll() is not None
                for record in _read_records(metrics_path, len(records)):
                    records.append(record)
                    wall = time.perf_counter() - start
                    print(
                        f'epoch {record["epoch"]:.0f}: valid {record["valid_accuracy"]:.4f} '
                        f'at {record["elapsed_seconds"]:.0f} s training ({wall:.0f} s wall)',
                        file=sys.stderr,
                        flush=True,
                    )
                    for target in targets:
                        if target not in reached and record['valid_accuracy'] >= target:
                            reached[target] = {
                                'seconds': record['elapsed_seconds'],
                                'wall_seconds': wall,
                                'epoch': record['epoch'],
                                'step': record['step'],
                                'valid_accuracy': record['valid_accuracy'],
                            }
                    if len(reached) == len(targets):
                        stopped_by = 'targets_reached'
                    elif record['elapsed_seconds'] >= args.max_seconds:
                        stopped_by = 'max_seconds'
                    if stopped_by:
                        break
                if stopped_by is None and exited:
                    stopped_by = f'trainer_exited({proc.returncode})'
                if stopped_by is None and (
                    time.perf_counter() - start > args.max_seconds + args.startup_seconds
                ):
                    stopped_by = 'max_wall_seconds'
                if stopped_by is None:
                    time.sleep(1.0)
        finally:
            _stop(proc)
    if not records and proc.returncode:
        tail = log_path.read_text(encoding='utf-8', errors='replace')[-3000:]
        raise SystemExit(f'The trainer failed (exit {proc.returncode}):\n{tail}')
    last = records[-1] if records else {}
    return {
        'config': args.config,
        'overrides': passthrough,
        'schedule': schedule,
        'workdir': str(workdir),
        'stopped_by': stopped_by,
        'targets': {f'{t:g}': reached.get(t) for t in targets},
        'best_valid_accuracy': max((r['valid_accuracy'] for r in records), default=None),
        'epochs': last.get('epoch'),
        'elapsed_seconds': last.get('elapsed_seconds'),
        'wall_seconds': time.perf_counter() - start,
        'images_per_second': last.get('images_per_second'),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Other --config.FIELD=VALUE arguments go to the trainer.',
    )
    parser.add_argument('--config', default='configs/glyph.py', help='relative to the repo')
    parser.add_argument('--workdir', help='a new directory (default: a fresh temporary one)')
    parser.add_argument('--targets', default='0.90,0.95', help='validation accuracies to time')
    parser.add_argument('--num-epochs', type=int, default=100)
    parser.add_argument(
        '--max-seconds', type=float, default=1800.0, help='stop after this much training time'
    )
    parser.add_argument(
        '--startup-seconds',
        type=float,
        default=600.0,
        help='wall-time allowance for dataset preparation and compilation',
    )
    parser.add_argument('--json', action='store_true', help='one JSON object instead of a table')
    args, passthrough = parser.parse_known_args(argv)
    unknown = [a for a in passthrough if not a.startswith('--config.')]
    if unknown:
        parser.error(f'unrecognized arguments: {" ".join(unknown)}')
    result = run(args, passthrough)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f'{result["config"]} {" ".join(result["overrides"])} (schedule {result["schedule"]}); '
        f'stopped: {result["stopped_by"]} after {result["epochs"] or 0:.0f} epochs, '
        f'{result["elapsed_seconds"] or 0:.0f} s training, {result["wall_seconds"]:.0f} s wall; '
        f'best valid {result["best_valid_accuracy"] or 0:.4f}'
    )
    print(f'{"target":>7} {"training s":>10} {"wall s":>8} {"epoch":>6} {"valid acc":>9}')
    for target, hit in result['targets'].items():
        if hit is None:
            print(f'{float(target):>7.2%} {"not reached":>10}')
        else:
            print(
                f'{float(target):>7.2%} {hit["seconds"]:>10.1f} {hit["wall_seconds"]:>8.1f} '
                f'{hit["epoch"]:>6.0f} {hit["valid_accuracy"]:>9.4f}'
            )
    return 0


if __name__ == '__main__':
    sys.exit(main())
