"""The training loop's images/s against its train step's, measured alternately in one session.

The loop's rate is what the real command reports: ``python -m flaxcnn.train`` runs the config
for ``--epochs`` epochs (under a time budget too long to reach, so time-based schedules
work) in a fresh workdir and its ``metrics.jsonl`` gives the
last epoch's ``images_per_second`` (training only: validation is outside it; the first epoch
holds the warm-up). The step's rate is ``benchmarks/train_step.py``'s for the same model and
batch (random pixels, no input pipeline, no augmentation), each in its own subprocess. Loop
and step runs alternate ``--pairs`` times so that the machine's drift hits both; the ratio
loop / step is the loop's efficiency (issue #20 asks >= 90%).

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
    spec = train_step.preset_spec(config.model, batch_size=batch_size)
    print(f'# {args.config}: {config.model}, batch {batch_size}, {args.epochs} epochs per loop run')
    rows = []
    for pair in range(1, args.pairs + 1):
        loop = loop_rate(args.config, args.epochs, overrides)
        step = train_step.run_isolated('flaxcnn', spec)['images_per_second']
        rows.append((pair, loop, step, loop / step))
        print(f'# pair {pair}: loop {loop:,.0f} img/s, step {step:,.0f} img/s', flush=True)
    print(f'{"pair":>4} {"loop img/s":>11} {"step img/s":>11} {"loop/step":>9}')
    for pair, loop, step, ratio in rows:
        print(f'{pair:>4} {loop:>11,.0f} {step:>11,.0f} {ratio:>9.2f}')
    print(f'median loop/step: {statistics.median(r[3] for r in rows):.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
