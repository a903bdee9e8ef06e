"""Training: ``train_and_evaluate(config, workdir)`` trains or resumes a run, then tests it."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import resource
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

from flaxcnn import (
    checkpoint,
    class_balance,
    distributed,
    evaluation,
    finetune,
    malloc,
    models,
    ops,
    optim,
    recipes,
    steps,
    transfer,
)
from flaxcnn.clock import Clock
from flaxcnn.config import validate
from flaxcnn.data import datasets, in_memory, pipeline
from flaxcnn.metric_writers import MetricWriter

# In-flight steps before the host waits: keeps the host clock (time budget, time-based
# schedule) within a step of the device without stalling it.
_MAX_STEPS_IN_FLIGHT = 2


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
    """Trains ``config`` in ``workdir`` (resuming its run) until ``num_epochs`` or the time
    budget, tests the best checkpoint; returns the summary (process 0 writes summary.json)."""
    # ------------------------------------------------------------------ setup and mesh
    validate(config)  # before any work: a bad field is one clear error
    distributed.initialize(config.distributed)
    workdir, is_primary = pathlib.Path(workdir), distributed.is_primary()
    checkpoint.check_writable(workdir)
    start = time.perf_counter()
    dataset = in_memory.load(
        datasets.load(config.dataset), config.input.in_memory_mb, progress=is_primary
    )
    dataset_seconds = time.perf_counter() - start
    mesh = distributed.create_mesh()
    distributed.check_divisible(
        mesh, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size
    )

    # ------------------------------------------------------------------ data
    config = transfer.resolve_normalization(config, channels=dataset.image_shape[-1])
    identity = checkpoint.run_identity(config, dataset)
    mean, std, input_shape = identity['mean'], identity['std'], tuple(identity['image_shape'])
    steps_per_epoch = len(dataset.splits['train']) // config.batch_size
    total_steps = config.num_epochs * steps_per_epoch

    # ------------------------------------------------------------------ model and state
    model = checkpoint.create_model(identity, rngs=nnx.Rngs(config.seed))
    num_params = models.count_params(model)
    groups = finetune.parameter_groups(config, model)
    tx = finetune.wrap_optimizer(optim.create_optimizer, config, groups)
    schedule = optim.create_schedule(config, steps_per_epoch)
    recipe = recipes.Recipe.from_config(config)
    train_graphdef, eval_graphdef, state = steps.create_train_state(
        model, tx, config.seed, ema=bool(recipe.ema_decay)
    )
    train_graphdef = finetune.freeze_batch_norms(train_graphdef, state, groups)
    state = jax.device_put(state, distributed.replicated(mesh))

    # ------------------------------------------------------------------ restore
    checkpoints = checkpoint.Checkpoints(workdir, max_to_keep=config.checkpoint.max_to_keep)
    clock = Clock(config.time_budget_s, schedule_reads_seconds=schedule.clock == 'seconds')
    state, saved = _restore(checkpoints, state, config, identity, mesh, workdir, is_primary)
    step, best_valid_accuracy = saved['progress']['step'], saved['progress']['best_valid_accuracy']
    clock.load(saved['progress'])
    init_source = saved['init']
    config_json = json.loads(config.to_json_best_effort())

    def meta(weights: str = 'raw') -> dict[str, Any]:  # identity, progress, config, weights
        now = {'step': step, **clock.save(), 'best_valid_accuracy': best_valid_accuracy}
        run = {'config': config_json, 'init': init_source, 'weights': weights}
        return {**identity, 'progress': now, **run}

    # ------------------------------------------------------------------ compile
    start = time.perf_counter()
    forward = steps.make_forward(eval_graphdef, mean=mean, std=std, tta=recipe.tta)
    variables = steps.inference_variables(state)
    class_weights = class_balance.loss_weights(config.input.class_balance, dataset)
    train_step = steps.make_train_step(
        train_graphdef, tx, schedule.fn, mean=mean, std=std, recipe=recipe,
        class_weights=class_weights,
    )  # fmt: skip
    with ops.use(config.ops):  # both steps are traced and compiled here, ahead of time
        evaluator = evaluation.Evaluator(
            config, dataset, forward, variables, mesh, workdir / 'eval'
        )
        train_step = _compile(train_step, state, mesh, config.batch_size, input_shape)
    compile_seconds = time.perf_counter() - start
    malloc.keep_freed_memory(train_step)

    # ------------------------------------------------------------------ train loop
    writer = MetricWriter(workdir, resume_step=step) if is_primary else None
    clock.start()
    step_seconds, images = 0.0, 0
    batches = train_batches(
        config, dataset, step, shard_index=jax.process_index(), num_shards=jax.process_count()
    )
    spe, every = steps_per_epoch, config.checkpoint.every_steps
    while step < total_steps and not clock.out_of_time():
        epoch_start, first_step, epoch_end = time.perf_counter(), step, (step // spe + 1) * spe
        sums, in_flight = None, collections.deque()
        bar = _epoch_bar(step, spe, config.num_epochs, is_primary)
        while step < epoch_end and (lr_clock := clock.before_step(step)) is not None:
            batch = distributed.to_device(mesh, next(batches))
            state, metrics = train_step(state, batch, np.float32(lr_clock))
            sums = steps.accumulate(sums, metrics)
            in_flight.append(metrics['loss'])
            if len(in_flight) > _MAX_STEPS_IN_FLIGHT:
                in_flight.popleft().block_until_ready()
            step += 1
            bar.update()
            checkpoint_now = every and step % every == 0 and step % spe
            if step % config.log_every_steps == 0 or checkpoint_now:
                s = _fetch_finite(sums, checkpoints)
                loss, acc = s['loss'] / s['count'], s['correct'] / s['count']
                bar.set_postfix(loss=f'{loss:.4f}', acc=f'{acc:.4f}', refresh=False)
            if checkpoint_now:
                clock.record()
                checkpoints.save(step, state, meta())
        bar.close()
        jax.block_until_ready(state)
        if sums is None:  # the budget ran out before the epoch's first step
            break
        with clock.evaluating():  # validation counts as training time while the budget lasts
            train_time = time.perf_counter() - epoch_start
            s = _fetch_finite(sums, checkpoints)
            valid, weights, score = _validate(evaluator, state, ema=bool(recipe.ema_decay))
        step_seconds, images = step_seconds + train_time, images + int(s['count'])
        best_valid_accuracy = max(best_valid_accuracy, score)
        checkpoints.save(step, state, meta(weights), valid_accuracy=score)
        if is_primary:
            record = {
                'epoch': step / spe,
                'train_loss': float(s['loss'] / s['count']),
                'train_accuracy': float(s['correct'] / s['count']),
                **valid,
                'learning_rate': float(schedule.fn(clock.schedule_input(step))),
                'images_per_second': (step - first_step) * config.batch_size / train_time,
                'elapsed_seconds': clock.seconds,
            }
            writer.write(step, record)
            tqdm.write(_epoch_line(record), file=sys.stderr)
    stopped_by = 'epochs' if step >= total_steps else 'time_budget'
    batches.close()
    checkpoints.wait()

    # ------------------------------------------------------------------ final test
    best_weights = 'raw'
    if (best_step := checkpoints.best_step()) is not None:
        state, best_meta = checkpoints.restore(best_step, state)
        best_weights = best_meta.get('weights', 'raw')
    test = evaluator.run(steps.with_ema_weights(state) if best_weights == 'ema' else state, 'test')
    summary = {
        'model': config.model,
        'dataset': config.dataset.name,
        'num_params': num_params,
        'best_valid_accuracy': best_valid_accuracy,
        'best_step': best_step,
        'best_weights': best_weights,
        **evaluation.summary_fields(test),
        'epochs_completed': step / spe,
        'steps': step,
        'stopped_by': stopped_by,
        'train_seconds': clock.stopped_at if stopped_by == 'time_budget' else clock.seconds,
        'images_per_second': images / step_seconds if step_seconds else 0.0,
        'compile_seconds': compile_seconds,
        'dataset_seconds': dataset_seconds,
        'dataset_prepare_seconds': dataset.prepare_seconds,
        'init': init_source,
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'num_devices': mesh.devices.size,
        'num_processes': jax.process_count(),
    }
    checkpoints.close()
    if is_primary:
        _write_json_atomic(workdir / 'summary.json', summary)
        writer.close()
        _print_summary(summary, workdir)
    return summary


def train_batches(
    config: ml_collections.ConfigDict,
    dataset: datasets.Dataset,
    start_step: int = 0,
    *,
    shard_index: int = 0,
    num_shards: int = 1,
):
    """The training batches ``config`` asks for (``pipeline.train_dataset``) from batch
    ``start_step`` on, or with ``num_shards`` processes, process ``shard_index``'s rows of each.

    A split held in memory is batched in this process: worker processes would only copy its
    arrays and take cores from the step. Data streamed from disk uses ``input.num_workers``.
    """
    data = pipeline.train_dataset(
        dataset.splits['train'],
        batch_size=config.batch_size,
        seed=config.seed,
        center_crop=config.input.center_crop,
        shard_index=shard_index,
        num_shards=num_shards,
        class_balance=config.input.class_balance,
    )
    streamed = not isinstance(dataset.splits['train'], in_memory.ArraySplit)
    return pipeline.train_batches(
        data,
        start_step,
        num_workers=config.input.num_workers if streamed else 0,
        prefetch_batches=config.input.prefetch_batches,
    )


def _restore(checkpoints, state, config, identity, mesh, workdir, is_primary: bool):
    """(state, metadata) of the run's newest intact checkpoint; for a new run, ``state`` (with
    the ``init.source`` weights, if any) and the metadata of step 0. A resumed run never
    reloads its initial weights: they are in its checkpoints."""

    def resume(step: int):  # the identity first: another run's state would not fit
        saved = checkpoints.read_meta(step)
        checkpoint.check_identity(workdir, saved, identity)
        _check_same_state_layout(workdir, ml_collections.ConfigDict(saved['config']), config)
        return checkpoints.restore(step, state)

    latest, restored = checkpoints.read_intact(resume, newest=True)
    if latest is not None:
        if is_primary:
            print(f'Resuming {workdir} from step {latest}.', file=sys.stderr, flush=True)
        state, saved = restored
        return state, {**saved, 'init': saved.get('init')}
    progress = {'step': 0, 'train_seconds': 0.0, 'best_valid_accuracy': 0.0}
    new_run = {'progress': progress, 'init': None}
    if not transfer.init_source(config):
        return state, new_run
    params, batch_stats, report = transfer.load_initial_variables(
        config, state.params, state.batch_stats
    )
    if is_primary:
        print(report.text(), file=sys.stderr, flush=True)
    state = state.replace(params=params, batch_stats=batch_stats)
    return jax.device_put(state, distributed.replicated(mesh)), {**new_run, 'init': report.record}


def _compile(train_step, state, mesh, batch_size: int, input_shape: tuple[int, ...]):
    """``train_step`` compiled ahead of time for ``state`` and global batches of the mesh."""
    batch = distributed.batch_spec(mesh, batch_size, input_shape, with_mask=False)
    jitted = distributed.jit_train_step(train_step, mesh)
    return jitted.lower(state, batch, jax.ShapeDtypeStruct((), jnp.float32)).compile()


def _validate(evaluator: evaluation.Evaluator, state, *, ema: bool) -> tuple[dict, str, float]:
    """(the epoch record's validation fields, 'ema' or 'raw', its accuracy): with ``ema`` the
    moving average is validated too."""
    # The averaged weights first: eval/validation.json is left with the raw weights' report.
    averaged = evaluator.run(steps.with_ema_weights(state), 'validation') if ema else None
    raw = evaluator.run(state, 'validation')
    fields = {'valid_loss': raw['loss'], 'valid_accuracy': raw['accuracy']}
    if averaged is not None:
        fields |= {'valid_loss_ema': averaged['loss'], 'valid_accuracy_ema': averaged['accuracy']}
    return fields, *_better_weights(raw, averaged)


def _better_weights(valid: dict, valid_ema: dict | None) -> tuple[str, float]:
    """('ema' or 'raw', its validation accuracy): the averaged weights only if strictly better."""
    if valid_ema and valid_ema['accuracy'] > valid['accuracy']:
        return 'ema', valid_ema['accuracy']
    return 'raw', valid['accuracy']


def _state_layout(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The settings that shape the saved state (the optimizer's state, the moving average),
    as a config saved before some of them existed has them."""
    opt, ft = config.optimizer, config.get('finetune', {})
    return {
        'optimizer.name': opt.name,
        'optimizer.weight_decay on': bool(opt.weight_decay),
        'optimizer.clip_grad_norm on': bool(opt.get('clip_grad_norm', 0)),
        'ema.decay on': bool(config.get('ema', {}).get('decay', 0)),
        'finetune.freeze': ft.get('freeze', 'none'),
        'finetune.backbone_lr_scale or head_warmup_steps on': (
            ft.get('backbone_lr_scale', 1) != 1 or bool(ft.get('head_warmup_steps', 0))
        ),
    }


def _check_same_state_layout(
    workdir: pathlib.Path, saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict
) -> None:
    """Raises unless the settings that shape the saved state are as in the run ``saved`` (its
    config): a resumed state of another shape would not fit."""
    was, now = _state_layout(saved), _state_layout(config)
    changed = [f'{k}: {was[k]!r} -> {now[k]!r}' for k in was if was[k] != now[k]]
    if changed:
        raise checkpoint.RunMismatchError(
            f'{workdir} holds a run whose saved state has another shape than this config '
            f'asks for ({"; ".join(changed)}). Use another --workdir, or set these as they were '
            '(values may change, not whether they are on).'
        )


def _epoch_bar(step: int, steps_per_epoch: int, num_epochs: int, is_primary: bool) -> tqdm:
    """The progress bar of the epoch that ``step`` is in (shown by process 0 only)."""
    epoch = step // steps_per_epoch
    return tqdm(
        total=steps_per_epoch,
        initial=step - epoch * steps_per_epoch,
        mininterval=1.0,
        desc=f'epoch {epoch + 1}/{num_epochs}',
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not is_primary,
    )


def _epoch_line(record: dict[str, float]) -> str:
    r = record
    return (
        f'epoch {r["epoch"]:.2f}: train loss {r["train_loss"]:.4f} acc {r["train_accuracy"]:.4f} '
        f'| valid loss {r["valid_loss"]:.4f} acc {r["valid_accuracy"]:.4f}'
        + (f' (ema {r["valid_accuracy_ema"]:.4f})' if 'valid_accuracy_ema' in r else '')
    )


def _fetch_finite(sums: dict, checkpoints: checkpoint.Checkpoints) -> dict:
    """Metric sums on the host; stops training if a loss was NaN or infinite."""
    s = jax.device_get(sums)
    bad = int(s['first_nonfinite_step'])
    if bad != steps.NO_STEP:
        checkpoints.wait()
        last = checkpoints.latest_step()
        kept = (
            f'the last good checkpoint is step {last} in {checkpoints.directory}; re-run '
            'to resume from it, e.g. with a lower --config.optimizer.lr'
            if last is not None
            else 'no checkpoint had been saved yet'
        )
        raise FloatingPointError(
            f'Training diverged: the loss at step {bad} was not finite. Nothing from that '
            f'step on was saved: {kept}.'
        )
    return s


def _write_json_atomic(path: pathlib.Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + '.tmp')
    tmp.write_text(json.dumps(obj, indent=2) + '\n', encoding='utf-8')
    os.replace(tmp, path)


def _print_summary(summary: dict[str, Any], workdir: pathlib.Path) -> None:
    s = summary
    print(
        f'{s["dataset"]} {s["model"]}: best valid {s["best_valid_accuracy"]:.2%}, test '
        f'{s["test_accuracy"]:.2%}, {s["epochs_completed"]:.2f} epochs in '
        f'{s["train_seconds"]:.0f} s ({s["stopped_by"]}), {s["images_per_second"]:,.0f} img/s, '
        f'compile {s["compile_seconds"]:.1f} s, data {s["dataset_seconds"]:.1f} s, '
        f'{s["num_devices"]} device(s) in {s["num_processes"]} process(es) -> '
        f'{workdir / "summary.json"}',
        flush=True,
    )
