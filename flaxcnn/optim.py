"""Optimizers and learning-rate schedules built from the config (Optax).

Every schedule is an Optax schedule of a *clock*: the optimizer step for the step-based
schedules, elapsed training seconds for ``time_linear``, which therefore reaches zero
exactly when ``time_budget_s`` runs out, and for ``one_cycle`` when a time budget is set
(it spans the budget, else ``num_epochs``). The learning rate is an injected
hyperparameter (``optax.inject_hyperparams``), so a resumed run may change it freely.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections
import optax

from flaxcnn.config import ConfigError

OPTIMIZERS = ('adam', 'adamw', 'sgd')
SCHEDULES = ('constant', 'piecewise', 'cosine', 'time_linear', 'one_cycle')
# one_cycle's length, in the units its boundaries are rounded to (Optax rounds to integers).
_ONE_CYCLE_UNITS = 10_000


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule and the clock it reads: 'step' or 'seconds'."""

    fn: Callable[[float], float]
    clock: str


def create_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> Schedule:
    """Builds ``config.schedule`` around base rate ``config.optimizer.lr``."""
    lr = config.optimizer.lr
    sched = config.schedule
    total_steps = max(1, config.num_epochs * steps_per_epoch)
    warmup_steps = int(sched.warmup_epochs * steps_per_epoch)
    if sched.name == 'constant':
        fn = (
            optax.warmup_constant_schedule(0.0, lr, warmup_steps)
            if warmup_steps
            else (optax.constant_schedule(lr))
        )
        return Schedule(fn, 'step')
    if sched.name == 'piecewise':
        boundaries = {int(e * steps_per_epoch): sched.decay_factor for e in sched.decay_epochs}
        fn = optax.piecewise_constant_schedule(lr, boundaries)
        if warmup_steps:
            fn = optax.join_schedules(
                [optax.linear_schedule(0.0, lr, warmup_steps), fn], [warmup_steps]
            )
        return Schedule(fn, 'step')
    if sched.name == 'cosine':
        fn = optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup_steps, max(total_steps, warmup_steps + 1)
        )
        return Schedule(fn, 'step')
    if sched.name == 'time_linear':
        if config.time_budget_s <= 0:
            raise ConfigError(
                "config.schedule.name='time_linear' needs a positive config.time_budget_s "
                f'(got {config.time_budget_s}): use another schedule to train without a budget.'
            )
        return Schedule(optax.linear_schedule(lr, 0.0, config.time_budget_s), 'seconds')
    if sched.name == 'one_cycle':  # up from lr/25 to lr, then down to lr/25e4 (Optax's default)
        cycle = optax.cosine_onecycle_schedule(_ONE_CYCLE_UNITS, lr, sched.peak_fraction)
        reads_seconds = config.time_budget_s > 0
        units_per_tick = _ONE_CYCLE_UNITS / (config.time_budget_s if reads_seconds else total_steps)
        return Schedule(
            lambda clock: cycle(clock * units_per_tick), 'seconds' if reads_seconds else 'step'
        )
    raise ValueError(f'Unknown schedule.name {sched.name!r}; expected one of {SCHEDULES}.')


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optimizer named by ``config.optimizer`` with an injectable learning rate, after
    clipping the gradients' global norm to ``clip_grad_norm`` if it is set."""
    opt = config.optimizer
    if opt.name == 'adam':

        def make(learning_rate):
            tx = optax.adam(learning_rate)
            if opt.weight_decay:  # L2 penalty added to the gradient, as torch.optim.Adam does.
                tx = optax.chain(optax.add_decayed_weights(opt.weight_decay), tx)
            return tx
    elif opt.name == 'adamw':

        def make(learning_rate):
            return optax.adamw(learning_rate, weight_decay=opt.weight_decay)
    elif opt.name == 'sgd':

        def make(learning_rate):
            tx = optax.sgd(learning_rate, momentum=opt.momentum or None, nesterov=opt.nesterov)
            if opt.weight_decay:
                tx = optax.chain(optax.add_decayed_weights(opt.weight_decay), tx)
            return tx
    else:
        raise ValueError(f'Unknown optimizer.name {opt.name!r}; expected one of {OPTIMIZERS}.')

    def make_clipped(learning_rate):
        return optax.chain(optax.clip_by_global_norm(opt.clip_grad_norm), make(learning_rate))

    clipped = opt.clip_grad_norm > 0
    return optax.inject_hyperparams(make_clipped if clipped else make)(learning_rate=opt.lr)
