"""The training loop's images/s against its train step's, measured alternately in one session.

The loop's rate is what the real command reports: ``python -m flaxcnn.train`` runs the config
for ``--epochs`` epochs (under a time budget too long to reach, so time-based schedules
work) in a fresh workdir and its ``metrics.jsonl`` gives the
last epoch's ``images_per_second`` (training only: validation is outside it; the first epoch
holds the warm-up). The step's rate is ``benchmarks/train_step.py``'s for the same model and
batch (random pixels, no input pipeline), each in its own subprocess, twice: the plain step,
and the step with the config's on-device augmentation (``--recipe``), which the loop runs. Loop
and step runs alternate ``--pairs`` times so that the machine's drift hits all three; loop /
step is the loop's efficiency (issue #20 asks >= 90%), loop / augmented step what the loop
itself loses.

Commands (from the repository root)::

    .venv/bin/python benchmarks/loop_vs_step.py                          # glyphs, mynet_v2
    .venv/bin/python benchmarks/loop_vs_step.py --config configs/fruits_cnn.py \\
        --batch-size 256 --set dataset.folder=../shared/data/fruits360-mini
    .venv/bin/python benchmarks/loop_vs_step.py --epochs 1 --pairs 1 --set input.in_memory_mb=0
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import train_step  # noqa: E402  (benchmarks/train_step.py)


def loop_rate(config: str, epochs: int, overrides: Sequence[str]) -> float:
    """The last epoch's training images/s of a real ``flaxcnn.train`` run."""
    with tempfile.TemporaryDirectory(prefix='loop_vs_step_') as workdir:
        command = [
            sys.executable, '-m', 'flaxcnn.train', f'--config={config}', f'--workdir={workdir}',
            f'--config.num_epochs={epochs}', '--config.time_budget_s=1e6',
            *(f'--config.{o}' for o in overrides),
        ]  # fmt: skip
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f'{" ".join(command)} failed:\n{run.stderr[-3000:]}')
        lines = (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
        return json.loads(lines[-1])['images_per_second']


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default='configs/glyph.py')
    parser.add_argument('--batch-size', type=int, help="default: the config's")
    parser.add_argument('--epochs', type=int, default=2, help='loop epochs per run (>= 2)')
    parser.add_argument('--pairs', type=int, default=2)
    parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                        help='a config override for the loop, e.g. dataset.folder=PATH')  # fmt: skip
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from flaxcnn.config import from_file

    config = from_file(REPO / args.config)
    batch_size = args.batch_size or config.batch_size
    overrides = [*args.set, f'batch_size={batch_size}']
    plain = train_step.preset_spec(config.model, batch_size=batch_size)
    augmented = train_step.preset_spec(config.model, batch_size=batch_size, recipe=args.config)
    print(f'# {args.config}: {config.model}, batch {batch_size}, {args.epochs} epochs per loop run')
    rows = []
    for pair in range(1, args.pairs + 1):
        loop = loop_rate(args.config, args.epochs, overrides)
        step = train_step.run_isolated('flaxcnn', plain)['images_per_second']
        step_augmented = train_step.run_isolated('flaxcnn', augmented)['images_per_second']
        rows.append((pair, loop, step, step_augmented))
        print(f'# pair {pair}: loop {loop:,.0f}, step {step:,.0f}, augmented {step_augmented:,.0f}')
    print(f'{"pair":>4} {"loop":>7} {"step":>7} {"step+aug":>8} {"loop/step":>9} {"loop/step+aug":>13}')
    for pair, loop, step, step_augmented in rows:
        print(
            f'{pair:>4} {loop:>7,.0f} {step:>7,.0f} {step_augmented:>8,.0f} '
            f'{loop / step:>9.2f} {loop / step_augmented:>13.2f}'
        )
    print(
        f'median loop/step {statistics.median(r[1] / r[2] for r in rows):.2f}, '
        f'loop/step+aug {statistics.median(r[1] / r[3] for r in rows):.2f} (images/s)'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
