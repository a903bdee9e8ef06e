"""Images/s of the training input pipeline, streamed with 0, 1 and 2 grain workers or held in
memory, next to the train step.

The pipeline is built as ``training.train_and_evaluate`` builds it (``training.train_batches``:
seeded shuffle, batching; ``input.num_workers`` grain worker processes,
``input.prefetch_batches``) from the config's prepared dataset, read from its records
(``0``/``1``/``2`` workers) or decoded into memory first (``memory``: what training does with a
dataset that fits ``input.in_memory_mb``; decoding counts as start-up). The random
augmentation is not in the pipeline: the train step does it on the device. Timed alone: per worker count, the first batch
(worker start-up) and ``--warmup`` more batches are untimed, then ``--batches`` batches are
timed. The train step's consumption rate is measured in the same run with
``benchmarks/train_step.py``'s ``run_isolated`` (its own subprocess, so the two never share
the cores while timed) and the ratio pipeline / step is printed; the target is >= 3x, since
in training both share the machine. This is the source's data-loader-workers experiment.

Glyphs (configs/glyph.py: mynet_v2, batch 512, 90x90x1; the
dataset is generated on first use). ``--fruits PATH`` adds the Fruits-360 image-folder
pipeline (configs/fruits_cnn.py: basic_cnn, 100x100x3; PATH holds Training/ and
Test/; the first use converts it to ArrayRecord, which takes a while) next to basic_cnn's
step at that config's batch size.

Commands (from the repository root)::

    .venv/bin/python benchmarks/input_pipeline.py                  # ~1 minute
    .venv/bin/python benchmarks/input_pipeline.py --batches 60 --step-steps 20
    .venv/bin/python benchmarks/input_pipeline.py --fruits ~/data/fruits-360 --json
    .venv/bin/python benchmarks/input_pipeline.py --batch-size 64 --batches 3 --step-steps 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import train_step  # benchmarks/train_step.py

TARGET_RATIO = 3.0


def load_dataset(config):
    """The config's dataset and the seconds it took to load (or prepare)."""
    from flaxcnn.data import datasets

    start = time.perf_counter()
    dataset = datasets.load(config.dataset)
    return dataset, time.perf_counter() - start


def train_batches(config, dataset, workers: str):
    """The trainer's training batch iterator (as ``train_and_evaluate`` builds it) from step 0,
    streamed with ``workers`` worker processes or, for ``'memory'``, from memory."""
    from flaxcnn import training
    from flaxcnn.data import in_memory

    if workers == 'memory':
        return training.train_batches(config, in_memory.load(dataset, math.inf, progress=False))
    config = config.copy_and_resolve_references()
    config.input.num_workers = int(workers)
    return training.train_batches(config, dataset)


def measure_pipeline(config, dataset, *, workers: str, batches: int, warmup: int) -> dict[str, Any]:
    """Images/s of ``batches`` batches after start-up and ``warmup`` batches."""
    start = time.perf_counter()
    it = train_batches(config, dataset, workers)
    try:
        first = next(it)
        startup = time.perf_counter() - start
        for _ in range(warmup):
            next(it)
        start = time.perf_counter()
        for _ in range(batches):
            batch = next(it)
        seconds = time.perf_counter() - start
    finally:
        it.close()
    assert batch['image'].shape == first['image'].shape
    return {
        'num_workers': workers,
        'images_per_second': batches * config.batch_size / seconds,
        'startup_seconds': startup,
        'batch_shape': list(first['image'].shape),
    }


def step_spec(config, dataset, steps: int) -> train_step.Spec:
    """The train-step benchmark of the config's model, batch and optimizer on its input shape."""
    from flaxcnn.data import pipeline

    height, _, channels = pipeline.input_shape(dataset.image_shape, config.input.center_crop)
    return train_step.preset_spec(
        config.model,
        batch_size=config.batch_size,
        image_size=height,
        in_channels=channels,
        num_classes=len(dataset.class_names),
        optimizer=config.optimizer.name,
        lr=config.optimizer.lr,
        ops=config.ops,
        seed=config.seed,
        steps=steps,
    )


def benchmark(name: str, config, args, emit) -> list[dict[str, Any]]:
    dataset, load_seconds = load_dataset(config)
    print(
        f'# {name}: {len(dataset.splits["train"]):,} train images {dataset.image_shape}, '
        f'batch {config.batch_size}, loaded in {load_seconds:.1f} s '
        f'(prepared in {dataset.prepare_seconds:.1f} s)',
        file=sys.stderr,
        flush=True,
    )
    rows = []
    for workers in args.workers:
        row = measure_pipeline(
            config,
            dataset,
            workers=workers,
            batches=args.batches,
            warmup=args.warmup,
        )
        print(
            f'# {name}: {workers} worker(s): {row["images_per_second"]:,.0f} img/s '
            f'(start-up {row["startup_seconds"]:.1f} s)',
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    step = None
    if args.step_steps:
        spec = step_spec(config, dataset, args.step_steps)
        step = train_step.run_isolated('flaxcnn', spec)
    out = []
    for row in rows:
        full = {
            'dataset': config.dataset.name,
            'model': config.model,
            'batch_size': config.batch_size,
            **row,
        }
        if step is not None:
            full['step_images_per_second'] = step['images_per_second']
            full['ratio'] = row['images_per_second'] / step['images_per_second']
            full['meets_target'] = full['ratio'] >= TARGET_RATIO
        emit(full)
        out.append(full)
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f'{"dataset":<10} {"batch":>5} {"workers":>7} {"pipeline img/s":>14} {"start-up s":>10} '
        f'{"step model":<12} {"step img/s":>10} {"ratio":>6}  target >= {TARGET_RATIO:g}x'
    )
    for r in rows:
        step = r.get('step_images_per_second')
        print(
            f'{r["dataset"]:<10} {r["batch_size"]:>5} {r["num_workers"]:>7} '
            f'{r["images_per_second"]:>14,.0f} {r["startup_seconds"]:>10.1f} {r["model"]:<12} '
            + (
                f'{step:>10,.0f} {r["ratio"]:>6.2f}  {"ok" if r["meets_target"] else "BELOW"}'
                if step
                else f'{"-":>10} {"-":>6}'
            )
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--config', default='configs/glyph.py', help='the glyph run config')
    parser.add_argument('--data-dir', help='config.dataset.data_dir (prepared datasets)')
    parser.add_argument('--batch-size', type=int, help="default: the config's (512)")
    parser.add_argument(
        '--workers', default='0,1,2,memory', help="grain worker counts to time, or 'memory'"
    )
    parser.add_argument('--batches', type=int, default=20, help='timed batches per worker count')
    parser.add_argument(
        '--warmup', type=int, default=8, help='untimed batches after the first (drain buffers)'
    )
    parser.add_argument(
        '--step-steps',
        type=int,
        default=10,
        help='timed train steps for the consumption rate (0: skip the train step)',
    )
    parser.add_argument('--fruits', metavar='PATH', help='Fruits-360 folder (Training/, Test/)')
    parser.add_argument('--fruits-config', default='configs/fruits_cnn.py')
    parser.add_argument('--json', action='store_true', help='JSON lines instead of a table')
    args = parser.parse_args(argv)
    args.workers = args.workers.split(',')
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
        flags.FLAGS.mark_as_parsed()

    from flaxcnn import malloc
    from flaxcnn.config import from_file

    malloc.limit_arenas()  # as every flaxcnn command does when it starts (cli.start)

    def emit(row):
        if args.json:
            print(json.dumps(row), flush=True)

    runs = [('glyphs', from_file(REPO / args.config))]
    if args.fruits:
        fruits = from_file(REPO / args.fruits_config)
        fruits.dataset.folder = str(pathlib.Path(args.fruits).expanduser())
        runs.append(('fruits360', fruits))
    rows = []
    load = ' / '.join(f'{v:.2f}' for v in os.getloadavg())
    print(f'# {os.cpu_count()} CPU cores, load average {load}', file=sys.stderr, flush=True)
    for name, config in runs:
        if args.data_dir:
            config.dataset.data_dir = args.data_dir
        if args.batch_size:
            config.batch_size = args.batch_size
        rows += benchmark(name, config, args, emit)
    if not args.json:
        print_table(rows)
    return 0


if __name__ == '__main__':
    sys.exit(main())
