"""The learning-rate range test: ``python -m flaxcnn.lr_find --config=configs/glyph.py [--workdir=DIR]``.

Trains the config's model from its initial state while the rate grows exponentially from
``--min_lr`` to ``--max_lr`` over ``--steps`` steps, and stops early once the smoothed loss
exceeds ``--stop_factor`` times its lowest. It writes ``lr_find.png`` (loss against rate) into
the workdir (default: the current directory) and prints the suggested rate: a tenth of the rate
at the lowest smoothed loss, a point still on the descent and robust to the loss's noise. It
saves no checkpoint; the config's recipe (optimizer, augmentations, mixing) applies as in
training, its schedule does not.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import jax
import ml_collections
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from flaxcnn import checkpoint, cli, distributed, ops, optim, recipes, steps, training, transfer
from flaxcnn.config import validate
from flaxcnn.data import datasets

_CONFIG = cli.config_flag()
_WORKDIR = cli.define_once(
    'workdir',
    lambda: flags.DEFINE_string('workdir', None, 'Where to write lr_find.png (default: cwd).'),
)
_MIN_LR = flags.DEFINE_float('min_lr', 1e-6, 'The rate of the first step.')
_MAX_LR = flags.DEFINE_float('max_lr', 1.0, 'The rate of the last step.')
_STEPS = flags.DEFINE_integer('steps', 100, 'Steps from min_lr to max_lr.')
_STOP_FACTOR = flags.DEFINE_float(
    'stop_factor', 4.0, 'Stop once the smoothed loss exceeds this multiple of its lowest.'
)
flags.mark_flags_as_required(['config'])

_SMOOTHING = 0.9  # of the loss's exponential moving average (debiased), about 10 steps
PLOT_NAME = 'lr_find.png'


@dataclasses.dataclass(frozen=True)
class RangeTest:
    """The rates tried, the loss of each step and its smoothed curve, and the suggestion."""

    rates: list[float]
    losses: list[float]
    smoothed: list[float]

    @property
    def best_rate(self) -> float:
        """The rate at the lowest smoothed loss."""
        return self.rates[int(np.argmin(self.smoothed))]

    @property
    def suggestion(self) -> float:
        """A tenth of ``best_rate``."""
        return self.best_rate / 10


def range_test(
    config: ml_collections.ConfigDict,
    *,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_steps: int = 100,
    stop_factor: float = 4.0,
) -> RangeTest:
    """Runs the test on ``config`` (its train split, model, optimizer and recipe)."""
    if not 0 < min_lr < max_lr or num_steps < 2 or stop_factor <= 1:
        raise app.UsageError(
            f'Expected 0 < --min_lr < --max_lr, --steps >= 2 and --stop_factor > 1; got '
            f'{min_lr}, {max_lr}, {num_steps} and {stop_factor}.'
        )
    validate(config)
    dataset = datasets.load(config.dataset)
    mesh = distributed.create_mesh()
    distributed.check_divisible(mesh, batch_size=config.batch_size)
    config = transfer.resolve_normalization(config, channels=dataset.image_shape[-1])
    identity = checkpoint.run_identity(config, dataset)
    model = checkpoint.create_model(identity, rngs=nnx.Rngs(config.seed))
    tx = optim.create_optimizer(config)
    recipe = recipes.Recipe.from_config(config)
    graphdef, _, state = steps.create_train_state(
        model, tx, config.seed, ema=bool(recipe.ema_decay)
    )
    state = jax.device_put(state, distributed.replicated(mesh))
    ramp = optax.exponential_decay(min_lr, num_steps - 1, max_lr / min_lr)  # reads the step
    train_step = distributed.jit_train_step(
        steps.make_train_step(
            graphdef, tx, ramp, mean=identity['mean'], std=identity['std'], recipe=recipe
        ),
        mesh,
    )
    batches = training.train_batches(config, dataset)
    rates, losses, smoothed, average = [], [], [], 0.0
    with ops.use(config.ops):
        for step in range(num_steps):
            batch = distributed.to_device(mesh, next(batches))
            state, metrics = train_step(state, batch, np.float32(step))
            loss = float(metrics['loss'] / metrics['count'])
            if not math.isfinite(loss):
                break
            average = _SMOOTHING * average + (1 - _SMOOTHING) * loss
            rates.append(float(ramp(step)))
            losses.append(loss)
            smoothed.append(average / (1 - _SMOOTHING ** (step + 1)))
            if smoothed[-1] > stop_factor * min(smoothed):
                break
    batches.close()
    if not rates:
        raise FloatingPointError(f'The loss was not finite at the first step, at rate {min_lr}.')
    return RangeTest(rates, losses, smoothed)


def plot(result: RangeTest, path: pathlib.Path) -> None:
    """Loss and smoothed loss against the rate (log scale), the suggestion marked."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(result.rates, result.losses, color='0.75', label='loss')
    ax.plot(result.rates, result.smoothed, color='C0', label='smoothed loss')
    ax.axvline(result.best_rate, color='0.5', linestyle=':', label='lowest smoothed loss')
    ax.axvline(
        result.suggestion, color='C3', linestyle='--', label=f'suggested {result.suggestion:.3g}'
    )
    ax.set_xscale('log')
    ax.set_xlabel('learning rate')
    ax.set_ylabel('training loss')
    ax.set_title('learning-rate range test')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv) -> None:
    cli.start()
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    config = _CONFIG.value
    try:  # a --config file that failed to load is a placeholder raising on first use
        config.keys()
    except OSError as e:
        raise app.UsageError(str(e)) from e
    result = range_test(
        config,
        min_lr=_MIN_LR.value,
        max_lr=_MAX_LR.value,
        num_steps=_STEPS.value,
        stop_factor=_STOP_FACTOR.value,
    )
    directory = pathlib.Path(_WORKDIR.value or '.')
    directory.mkdir(parents=True, exist_ok=True)
    plot(result, directory / PLOT_NAME)
    print(
        f'Suggested learning rate: {result.suggestion:.3g} (a tenth of {result.best_rate:.3g}, '
        f'where the smoothed loss was lowest; {len(result.rates)} steps up to '
        f'{result.rates[-1]:.3g}) -> {directory / PLOT_NAME}',
        flush=True,
    )


if __name__ == '__main__':
    cli.run(main)
