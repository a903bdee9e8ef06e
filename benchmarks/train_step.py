"""Training-step throughput of flaxcnn's real train step, optionally against PyTorch.

The step is built exactly as ``flaxcnn.training.train_and_evaluate`` builds it:
``create_model`` -> ``optim.create_optimizer`` / ``create_schedule`` ->
``steps.create_train_state`` -> ``distributed.jit_train_step(steps.make_train_step(...))``
lowered and compiled ahead of time on the one-axis device mesh, state donated and replicated,
batch sharded, BatchNorm statistics updated, dropout on (key folded from the step). Each timed
step also moves the host batch to the device with ``jax.make_array_from_process_local_data`` as
the trainer does, and ends with ``jax.block_until_ready``. Images are random uint8 pixels (fixed
seed), normalized to fp32 inside flaxcnn's step as in training, and on the host beforehand for
PyTorch; labels are random. With ``--recipe CONFIG`` flaxcnn's step also applies that config's
on-device augmentation and mixing (``recipes.augment``), as its training loop does.

Reported per run: images/s = batch / median step time over ``--steps`` (>= 10) timed steps
after ``--warmup`` steps; compile seconds (lower + compile); peak RSS (``getrusage``) of the
run's process. Every run is a fresh subprocess of this script, so RSS and caches are per run.

``--reference torch`` runs the PyTorch twin (``benchmarks/torch_models.py``: same layers,
init, dropout, BN; same optimizer; same batch, fp32, train mode) alternately with flaxcnn,
``--pairs`` times, each run in its own subprocess. PyTorch uses ``torch.set_num_threads
(os.cpu_count())`` threads; XLA uses all cores. Its memory format is probed once per model
(a short run in each format, own subprocess) and the faster one is used for every pair,
unless ``--torch-memory-format`` fixes it; the table says which. The PyTorch step is
``from_numpy(...).contiguous(memory_format)`` -> forward -> cross-entropy ->
``zero_grad(set_to_none=True)`` -> backward -> ``optimizer.step()`` -> ``loss.item()``
(its eager CPU ops are synchronous).

Optimizers (the source recipes): Adam lr 0.002 with the glyph config's time-linear schedule
for mynet_v1/v2 and resnet_lite_11/22; Adam lr 0.01, constant, for basic_cnn; SGD momentum
0.9 lr 0.001, constant, for resnet50 and proxylessnas_gpu. PyTorch: the same optimizer with
a constant rate (the flaxcnn step computes its rate inside the step; the cost is nil).

Commands (from the repository root; needs ``pip install -e '.[bench]'`` for PyTorch)::

    .venv/bin/python benchmarks/train_step.py --model mynet_v2 --batch-size 8 --steps 3
    .venv/bin/python benchmarks/train_step.py --model mynet_v2 --batch-size 512 \\
        --reference torch --pairs 3
    .venv/bin/python benchmarks/train_step.py --all --reference torch --pairs 3
    .venv/bin/python benchmarks/train_step.py --all --reference torch --pairs 3 --json \\
        > train_step.jsonl
    .venv/bin/python benchmarks/train_step.py --model resnet50 --batch-size 32 \\
        --image-size 100 --in-channels 3 --num-classes 95 --ops plain
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
RESULT_PREFIX = 'RESULT '
GLYPH_MODELS = ('mynet_v1', 'mynet_v2', 'resnet_lite_11', 'resnet_lite_22')


@dataclasses.dataclass(frozen=True)
class Spec:
    """One benchmark configuration: model, input shape, optimizer and timing."""

    model: str
    batch_size: int
    image_size: int
    in_channels: int
    num_classes: int
    optimizer: str  # 'adam', 'adamw' or 'sgd' (momentum 0.9)
    lr: float
    steps: int = 15
    warmup: int = 3
    ops: str = 'fast'
    seed: int = 0
    recipe: str = ''  # a config file whose on-device recipe the step applies; '' = none

    def to_args(self) -> list[str]:
        return [f'--{k.replace("_", "-")}={v}' for k, v in dataclasses.asdict(self).items()]

    @property
    def input_desc(self) -> str:
        return f'{self.image_size}x{self.image_size}x{self.in_channels}/{self.num_classes}'


# The table, in its order: batch, image size, channels, classes, optimizer, lr.
PRESETS: dict[str, tuple[int, int, int, int, str, float]] = {
    'mynet_v2': (512, 90, 1, 52, 'adam', 0.002),
    'basic_cnn': (256, 100, 3, 95, 'adam', 0.01),  # configs/fruits_cnn.py's rate
    'mynet_v1': (512, 90, 1, 52, 'adam', 0.002),
    'resnet_lite_11': (512, 90, 1, 52, 'adam', 0.002),
    'resnet_lite_22': (512, 90, 1, 52, 'adam', 0.002),
    'resnet50': (32, 100, 3, 95, 'sgd', 0.001),
    'proxylessnas_gpu': (32, 100, 3, 95, 'sgd', 0.001),
}


def preset_spec(model: str, **overrides: Any) -> Spec:
    """The issue's configuration for ``model`` (glyph shapes for unknown models), overridden."""
    batch, size, channels, classes, opt, lr = PRESETS.get(model, PRESETS['mynet_v2'])
    spec = Spec(model, batch, size, channels, classes, opt, lr)
    return dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})


# Random uint8 pixels are normalized with these, on the device by flaxcnn's step (as in
# training) and beforehand on the host for PyTorch (as its DataLoader's transforms would).
PIXEL_MEAN, PIXEL_STD = 127.5, 73.9


def random_batch(spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """NHWC uint8 images and int32 labels, the same for both frameworks."""
    rng = np.random.default_rng(spec.seed)
    shape = (spec.batch_size, spec.image_size, spec.image_size, spec.in_channels)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = rng.integers(0, spec.num_classes, spec.batch_size).astype(np.int32)
    return images, labels


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(step_fn, spec: Spec) -> dict[str, Any]:
    """Runs ``spec.warmup`` then ``spec.steps`` steps, each timed; ``step_fn(i)`` -> loss."""
    start = time.perf_counter()
    loss = step_fn(0)
    first_step = time.perf_counter() - start
    for i in range(1, spec.warmup):
        step_fn(i)
    times = []
    for i in range(spec.warmup, spec.warmup + spec.steps):
        start = time.perf_counter()
        loss = step_fn(i)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        'images_per_second': spec.batch_size / median,
        'mean_images_per_second': spec.batch_size * len(times) / sum(times),
        'step_seconds_median': median,
        'step_seconds_min': min(times),
        'step_seconds_max': max(times),
        'first_step_seconds': first_step,
        'final_loss': float(loss),
    }


# --------------------------------------------------------------------------- flaxcnn


def flaxcnn_config(spec: Spec):
    """configs/glyph.py with the spec's model, batch, optimizer and ops."""
    import ml_collections

    from flaxcnn.config import from_file

    config = from_file(REPO / 'configs' / 'glyph.py')
    config.model_kwargs = ml_collections.ConfigDict()  # the model's defaults
    config.model = spec.model
    config.ops = spec.ops
    config.batch_size = spec.batch_size
    config.seed = spec.seed
    config.optimizer.name = spec.optimizer
    config.optimizer.lr = spec.lr
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 0.0
    if spec.model not in GLYPH_MODELS:
        config.schedule.name = 'constant'
    return config


def measure_flaxcnn(spec: Spec) -> dict[str, Any]:
    """Times flaxcnn's train step in this process, built as ``train_and_evaluate`` builds it."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from flaxcnn import distributed, malloc, models, ops, optim, recipes, steps
    from flaxcnn.config import from_file

    malloc.limit_arenas()  # before XLA starts its threads, as every command does (cli.start)
    config = flaxcnn_config(spec)
    mesh = distributed.create_mesh()
    if config.batch_size % mesh.devices.size:
        raise ValueError(f'batch_size {config.batch_size} is not divisible by the device count')
    ops.set_implementation(config.ops)
    model = models.create_model(
        config.model,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        image_size=spec.image_size,
        rngs=nnx.Rngs(config.seed),
        **config.model_kwargs,
    )
    num_params = models.count_params(model)
    tx = optim.create_optimizer(config)
    schedule = optim.create_schedule(config, steps_per_epoch=1)  # read by step-based schedules
    train_graphdef, _, state = steps.create_train_state(model, tx, config.seed)
    del model
    state = jax.device_put(state, distributed.replicated(mesh))
    sharding = distributed.batch_sharding(mesh)
    shape = (spec.batch_size, spec.image_size, spec.image_size, spec.in_channels)
    batch_spec = {
        'image': jax.ShapeDtypeStruct(shape, jnp.uint8, sharding=sharding),
        'label': jax.ShapeDtypeStruct((spec.batch_size,), jnp.int32, sharding=sharding),
    }
    start = time.perf_counter()
    train_step = (
        distributed.jit_train_step(
            steps.make_train_step(
                train_graphdef,
                tx,
                schedule.fn,
                mean=(PIXEL_MEAN,) * spec.in_channels,
                std=(PIXEL_STD,) * spec.in_channels,
                recipe=recipes.Recipe.from_config(from_file(REPO / spec.recipe))
                if spec.recipe
                else recipes.OFF,
            ),
            mesh,
        )
        .lower(state, batch_spec, jax.ShapeDtypeStruct((), jnp.float32))
        .compile()
    )
    compile_seconds = time.perf_counter() - start
    malloc.keep_freed_memory(train_step)  # as the trainer does
    images, labels = random_batch(spec)
    host_batch = {'image': images, 'label': labels}
    holder = {'state': state, 'sums': None}
    session_start = time.perf_counter()

    def step_fn(step: int):  # the training loop's per-step work, then a sync
        elapsed = time.perf_counter() - session_start
        clock = elapsed if schedule.clock == 'seconds' else step
        batch = {
            k: jax.make_array_from_process_local_data(sharding, v) for k, v in host_batch.items()
        }
        holder['state'], metrics = train_step(holder['state'], batch, np.float32(clock))
        holder['sums'] = steps.accumulate(holder['sums'], metrics)
        jax.block_until_ready((holder['state'], holder['sums']))
        return metrics['loss'] / metrics['count']

    result = _timed(step_fn, spec)
    return {
        'framework': 'flaxcnn',
        **result,
        'compile_seconds': compile_seconds,
        'peak_rss_mb': peak_rss_mb(),
        'num_params': num_params,
        'ops': config.ops,
        'schedule': config.schedule.name,
        'num_devices': int(mesh.devices.size),
        'versions': _versions('jax', 'jaxlib', 'flax', 'optax'),
    }


# --------------------------------------------------------------------------- PyTorch


def measure_torch(spec: Spec, memory_format: str) -> dict[str, Any]:
    """Times the PyTorch twin's train step in this process (``memory_format``: contiguous or
    channels_last)."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(HERE))
    import torch_models

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(spec.seed)
    fmt = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}[
        memory_format
    ]
    model = torch_models.create_model(
        spec.model,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        image_size=spec.image_size,
    )
    num_params = torch_models.count_params(model)
    model = model.to(memory_format=fmt)
    model.train()
    if spec.optimizer == 'adam':
        opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    elif spec.optimizer == 'adamw':  # flaxcnn_config sets weight_decay 0
        opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    elif spec.optimizer == 'sgd':
        opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=0.9)
    else:
        raise ValueError(f'no PyTorch optimizer for {spec.optimizer!r}')
    images, labels = random_batch(spec)
    images = (images.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))  # what a torch loader yields
    labels = labels.astype(np.int64)

    def step_fn(step: int):
        x = torch.from_numpy(images).contiguous(memory_format=fmt)
        y = torch.from_numpy(labels)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            (logits.argmax(-1) == y).sum()  # the flaxcnn step's 'correct' metric
        return loss.item()

    result = _timed(step_fn, spec)
    return {
        'framework': 'pytorch',
        **result,
        'compile_seconds': None,  # eager; see first_step_seconds
        'peak_rss_mb': peak_rss_mb(),
        'num_params': num_params,
        'memory_format': memory_format,
        'threads': torch.get_num_threads(),
        'versions': _versions('torch'),
    }


def probe_torch(spec: Spec) -> dict[str, float]:
    """Images/s of a short run in each memory format (a few steps each, this process)."""
    short = dataclasses.replace(spec, warmup=2, steps=3)
    return {
        fmt: measure_torch(short, fmt)['images_per_second']
        for fmt in ('contiguous', 'channels_last')
    }


# --------------------------------------------------------------------------- orchestration


def _versions(*names: str) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_isolated(framework: str, spec: Spec, memory_format: str = 'contiguous') -> dict[str, Any]:
    """Runs one measurement in a fresh subprocess of this script and returns its result.

    ``framework``: 'flaxcnn', 'pytorch', or 'pytorch-probe' (memory-format probe).
    """
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), f'--worker={framework}']
    cmd += spec.to_args() + [f'--torch-memory-format={memory_format}']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f'{framework} run of {spec.model} failed (exit {proc.returncode}):\n'
            f'{proc.stderr[-4000:]}'
        )
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _row(spec: Spec, result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {'model': spec.model, 'batch_size': spec.batch_size, **result, **extra}


def benchmark_model(
    spec: Spec, *, reference: str | None, pairs: int, memory_format: str, emit
) -> dict[str, Any]:
    """Runs ``pairs`` flaxcnn runs (alternating with PyTorch runs with ``reference``)."""
    torch_format, probe = memory_format, None
    if reference and memory_format == 'auto':
        _log(f'[{spec.model}] probing PyTorch memory formats ...')
        probe = run_isolated('pytorch-probe', spec)
        torch_format = max(probe, key=probe.get)
        _log(
            f'[{spec.model}] PyTorch memory format: {torch_format} '
            f'(probe: {", ".join(f"{k} {v:.0f} img/s" for k, v in probe.items())})'
        )
    runs = []
    for pair in range(1, pairs + 1):
        flax = run_isolated('flaxcnn', spec)
        _log(
            f'[{spec.model}] run {pair}: flaxcnn {flax["images_per_second"]:.1f} img/s, '
            f'compile {flax["compile_seconds"]:.1f} s, RSS {flax["peak_rss_mb"]:.0f} MB'
        )
        ref = None
        if reference:
            ref = run_isolated('pytorch', spec, torch_format)
            _log(
                f'[{spec.model}] run {pair}: PyTorch {ref["images_per_second"]:.1f} img/s, '
                f'RSS {ref["peak_rss_mb"]:.0f} MB'
            )
            if ref['num_params'] != flax['num_params']:
                raise RuntimeError(
                    f'{spec.model}: flaxcnn has {flax["num_params"]:,} params, '
                    f'PyTorch {ref["num_params"]:,}'
                )
            ratio = flax['images_per_second'] / ref['images_per_second']
            emit(_row(spec, flax, pair=pair, ratio=ratio))
            emit(_row(spec, ref, pair=pair, ratio=ratio))
        else:
            emit(_row(spec, flax, pair=pair))
        runs.append((flax, ref))
    flax_runs = [f for f, _ in runs]
    summary = {
        'model': spec.model,
        'batch_size': spec.batch_size,
        'framework': 'summary',
        'input': spec.input_desc,
        'num_params': flax_runs[0]['num_params'],
        'images_per_second': statistics.median(f['images_per_second'] for f in flax_runs),
        'compile_seconds': statistics.median(f['compile_seconds'] for f in flax_runs),
        'peak_rss_mb': max(f['peak_rss_mb'] for f in flax_runs),
        'runs': runs,
    }
    if reference:
        ref_runs = [r for _, r in runs]
        summary.update(
            reference_images_per_second=statistics.median(r['images_per_second'] for r in ref_runs),
            reference_peak_rss_mb=max(r['peak_rss_mb'] for r in ref_runs),
            reference_memory_format=torch_format,
            memory_format_probe=probe,
            ratio=statistics.median(
                f['images_per_second'] / r['images_per_second'] for f, r in runs
            ),
        )
    emit({k: v for k, v in summary.items() if k != 'runs'})
    return summary


def print_pairs_table(summary: dict[str, Any]) -> None:
    """One model's runs: flaxcnn vs PyTorch per pair, then the median ratio."""
    reference = 'ratio' in summary
    head = f'{"model":<17} {"batch":>5} {"pair":>4} {"flaxcnn img/s":>13}'
    if reference:
        head += f' {"PyTorch img/s":>13} {"ratio":>6}'
    head += f' {"compile s":>9} {"RSS MB":>7}'
    if reference:
        head += f' {"torch RSS MB":>12}'
    print(head)
    for pair, (flax, ref) in enumerate(summary['runs'], 1):
        line = (
            f'{summary["model"]:<17} {summary["batch_size"]:>5} {pair:>4} '
            f'{flax["images_per_second"]:>13.1f}'
        )
        if reference:
            ratio = flax['images_per_second'] / ref['images_per_second']
            line += f' {ref["images_per_second"]:>13.1f} {ratio:>6.2f}'
        line += f' {flax["compile_seconds"]:>9.1f} {flax["peak_rss_mb"]:>7.0f}'
        if reference:
            line += f' {ref["peak_rss_mb"]:>12.0f}'
        print(line)
    if reference:
        print(
            f'median ratio flaxcnn/PyTorch: {summary["ratio"]:.2f} '
            f'(PyTorch memory format: {summary["reference_memory_format"]})'
        )


def print_summary_table(summaries: list[dict[str, Any]]) -> None:
    """One line per model: medians over the runs."""
    reference = any('ratio' in s for s in summaries)
    head = (
        f'{"model":<17} {"batch":>5} {"input/classes":>14} {"params":>11} '
        f'{"flaxcnn img/s":>13} {"compile s":>9} {"RSS MB":>7}'
    )
    if reference:
        head += f' {"PyTorch img/s":>13} {"torch RSS MB":>12} {"format":>13} {"ratio":>6}'
    print(head)
    for s in summaries:
        line = (
            f'{s["model"]:<17} {s["batch_size"]:>5} {s["input"]:>14} {s["num_params"]:>11,} '
            f'{s["images_per_second"]:>13.1f} {s["compile_seconds"]:>9.1f} '
            f'{s["peak_rss_mb"]:>7.0f}'
        )
        if 'ratio' in s:
            line += (
                f' {s["reference_images_per_second"]:>13.1f} '
                f'{s["reference_peak_rss_mb"]:>12.0f} {s["reference_memory_format"]:>13} '
                f'{s["ratio"]:>6.2f}'
            )
        print(line)


def _environment(spec: Spec, reference: str | None) -> str:
    from importlib import metadata

    parts = [f'flaxcnn {metadata.version("flaxcnn")}', f'jax {metadata.version("jax")}']
    parts.append(f'flax {metadata.version("flax")}')
    if reference:
        parts.append(f'torch {metadata.version("torch")} ({os.cpu_count()} threads)')
    load = ' / '.join(f'{v:.2f}' for v in os.getloadavg())
    return (
        f'# {", ".join(parts)}; ops {spec.ops}; fp32; {os.cpu_count()} CPU cores '
        f'({platform.processor() or platform.machine()}); load average {load}; '
        f'{spec.warmup} warm-up + {spec.steps} timed steps per run'
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--model', help=f'one of {", ".join(PRESETS)} (or any flaxcnn model)')
    parser.add_argument('--all', action='store_true', help="the issue's table, every model")
    parser.add_argument('--batch-size', type=int)
    parser.add_argument('--image-size', type=int)
    parser.add_argument('--in-channels', type=int)
    parser.add_argument('--num-classes', type=int)
    parser.add_argument('--optimizer', choices=('adam', 'adamw', 'sgd'))
    parser.add_argument('--lr', type=float)
    parser.add_argument('--steps', type=int, help='timed steps per run (default 15, use >= 10)')
    parser.add_argument('--warmup', type=int, help='untimed steps first (default 3)')
    parser.add_argument('--ops', choices=('fast', 'plain'))
    parser.add_argument('--seed', type=int)
    parser.add_argument(
        '--recipe', metavar='CONFIG', help="apply CONFIG's on-device augmentation in the step"
    )
    parser.add_argument('--reference', choices=('torch',))
    parser.add_argument(
        '--pairs', type=int, default=3, help='runs per framework (use >= 3; default 3)'
    )
    parser.add_argument(
        '--torch-memory-format',
        choices=('auto', 'contiguous', 'channels_last'),
        default='auto',
        help='auto: probe both once per model, keep the faster',
    )
    parser.add_argument('--json', action='store_true', help='JSON lines instead of tables')
    parser.add_argument(
        '--worker', choices=('flaxcnn', 'pytorch', 'pytorch-probe'), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    overrides = {
        k: getattr(args, k)
        for k in (
            'batch_size',
            'image_size',
            'in_channels',
            'num_classes',
            'optimizer',
            'lr',
            'steps',
            'warmup',
            'ops',
            'seed',
            'recipe',
        )
    }
    if args.worker:
        spec = preset_spec(args.model, **overrides)
        if args.worker == 'flaxcnn':
            result = measure_flaxcnn(spec)
        elif args.worker == 'pytorch':
            result = measure_torch(spec, args.torch_memory_format)
        else:
            result = probe_torch(spec)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    if args.all == bool(args.model):
        parser.error('give exactly one of --model NAME or --all')
    if args.all and any(
        overrides[k] is not None for k in ('image_size', 'in_channels', 'num_classes')
    ):
        parser.error('--all uses the preset shapes; give --model to change them')
    if args.pairs < 1:
        parser.error('--pairs must be >= 1')
    names = list(PRESETS) if args.all else [args.model]
    specs = [preset_spec(name, **overrides) for name in names]
    if specs[0].steps < 10 or (args.reference and args.pairs < 3):
        _log('# note: fewer than 10 timed steps or 3 pairs: a smoke run, not a measurement')
    load = os.getloadavg()[0]
    if load > 0.5:
        _log(
            f'# warning: load average {load:.1f} before starting: other processes share the '
            f"{os.cpu_count()} cores, the numbers will be noisy (PyTorch's OpenMP threads "
            'suffer most)'
        )

    def emit(row: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(row), flush=True)

    if not args.json:
        print(_environment(specs[0], args.reference), flush=True)
    summaries = []
    for spec in specs:
        summary = benchmark_model(
            spec,
            reference=args.reference,
            pairs=args.pairs,
            memory_format=args.torch_memory_format,
            emit=emit,
        )
        summaries.append(summary)
        if not args.json:
            print_pairs_table(summary)
            print(flush=True)
    if not args.json and len(summaries) > 1:
        print_summary_table(summaries)
    return 0


if __name__ == '__main__':
    sys.exit(main())
