"""The training loop: epochs under a time budget, validation, checkpoints, resume, summary."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import resource
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

from flaxcnn import checkpoint, distributed, evaluation, malloc, models, ops, optim, steps
from flaxcnn.config import default_config
from flaxcnn.data import datasets, pipeline
from flaxcnn.metric_writers import MetricWriter

# In-flight steps before the host waits: keeps the host clock (time budget, time-based
# schedule) within a step of the device without stalling it.
_MAX_STEPS_IN_FLIGHT = 2


def normalization(config: ml_collections.ConfigDict, dataset: datasets.Dataset):
    """(mean, std) per channel that ``config.input.normalization`` asks for."""
    name = config.input.normalization
    if name == 'dataset':
        return tuple(dataset.mean), tuple(dataset.std)
    if name == 'imagenet':
        if dataset.image_shape[-1] != 3:
            raise ValueError(
                "input.normalization='imagenet' needs 3-channel images; "
                f'the dataset has {dataset.image_shape[-1]}.'
            )
        return pipeline.IMAGENET_MEAN, pipeline.IMAGENET_STD
    raise ValueError(f"Unknown input.normalization {name!r}; expected 'dataset' or 'imagenet'.")


def run_identity(config: ml_collections.ConfigDict, dataset: datasets.Dataset) -> dict[str, Any]:
    """What a checkpoint must match to be resumed by ``config``; also what prediction needs."""
    mean, std = normalization(config, dataset)
    return {
        'model': config.model,
        'model_kwargs': config.model_kwargs.to_dict(),
        'dataset': {  # where the data lives may change between runs; what it is may not
            k: v for k, v in config.dataset.to_dict().items() if k not in ('data_dir', 'folder')
        },
        'class_names': list(dataset.class_names),
        'image_shape': list(pipeline.input_shape(dataset.image_shape, config.input.center_crop)),
        'stored_image_shape': list(dataset.image_shape),
        'mean': list(mean),
        'std': list(std),
    }


def _check_identity(workdir: pathlib.Path, saved: dict[str, Any], expected: dict[str, Any]) -> None:
    for key in ('model', 'model_kwargs', 'dataset', 'class_names', 'image_shape', 'mean', 'std'):
        if json.dumps(saved.get(key), sort_keys=True) != json.dumps(expected[key], sort_keys=True):
            raise ValueError(
                f'{workdir} holds a run with {key}={saved.get(key)!r}, but the config asks for '
                f'{key}={expected[key]!r}. Use another --workdir, or the same {key} to resume '
                '(the learning rate, schedule and epoch count may change on resume).'
            )


def _check_writable(workdir: pathlib.Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write_check'):
            pass
    except OSError as e:
        raise PermissionError(
            f'Cannot write to the workdir {workdir}: {e.strerror or e}. Choose a writable '
            '--workdir.'
        ) from e


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_json_atomic(path: pathlib.Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + '.tmp')
    tmp.write_text(json.dumps(obj, indent=2) + '\n', encoding='utf-8')
    os.replace(tmp, path)


class Trainer:
    """One run of ``config`` in ``workdir``; ``run()`` trains (or resumes) and evaluates."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | pathlib.Path):
        distributed.initialize(config.distributed)
        self.config = config
        self.workdir = pathlib.Path(workdir)
        self.is_primary = distributed.is_primary()
        _check_writable(self.workdir)
        start = time.perf_counter()
        self.dataset = datasets.load(config.dataset)
        self.dataset_seconds = time.perf_counter() - start
        self.mesh = steps.create_mesh()
        self.num_devices = self.mesh.devices.size
        for name in ('batch_size', 'eval_batch_size'):
            if config[name] % self.num_devices:
                raise ValueError(
                    f'{name}={config[name]} is not divisible by the number of '
                    f'devices ({self.num_devices}).'
                )
        ops.set_implementation(config.ops)
        self.identity = run_identity(config, self.dataset)
        self.input_shape = tuple(self.identity['image_shape'])
        self.mean, self.std = self.identity['mean'], self.identity['std']
        height, _, channels = self.input_shape
        num_classes = len(self.dataset.class_names)
        model = models.create_model(
            config.model,
            num_classes=num_classes,
            in_channels=channels,
            image_size=height,
            rngs=nnx.Rngs(config.seed),
            **config.model_kwargs,
        )
        self.num_params = models.count_params(model)
        self.steps_per_epoch = len(self.dataset.splits['train']) // config.batch_size
        self.total_steps = config.num_epochs * self.steps_per_epoch
        tx = optim.create_optimizer(config)
        self.schedule = optim.create_schedule(config, self.steps_per_epoch)
        train_graphdef, eval_graphdef, state = steps.create_train_state(model, tx, config.seed)
        self.state = jax.device_put(state, steps.replicated(self.mesh))
        self.checkpoints = checkpoint.Checkpoints(
            self.workdir, max_to_keep=config.checkpoint.max_to_keep
        )
        self.progress = {'step': 0, 'train_seconds': 0.0, 'best_valid_accuracy': 0.0}
        latest = self.checkpoints.latest_step()
        if latest is not None:
            _check_identity(self.workdir, self.checkpoints.read_meta(latest), self.identity)
            self.state, meta = self.checkpoints.restore(latest, self.state)
            self.progress = meta['progress']
            if self.is_primary:
                print(f'Resuming {self.workdir} from step {latest}.', file=sys.stderr, flush=True)
        self._train_step = steps.jit_train_step(
            steps.make_train_step(
                train_graphdef, tx, self.schedule.fn, mean=self.mean, std=self.std
            ),
            self.mesh,
        )
        start = time.perf_counter()
        self.eval_step = (
            steps.jit_eval_step(
                steps.make_eval_step(eval_graphdef, num_classes, mean=self.mean, std=self.std),
                self.mesh,
            )
            .lower(self.state, self._batch_spec(config.eval_batch_size, with_mask=True))
            .compile()
        )
        self.compile_seconds = time.perf_counter() - start

    @classmethod
    def from_workdir(cls, workdir: str | pathlib.Path, **dataset_overrides) -> Trainer:
        """The run in ``workdir``, rebuilt from the config saved with its latest checkpoint."""
        ckpts = checkpoint.Checkpoints(workdir)
        latest = ckpts.latest_step()
        if latest is None:
            raise FileNotFoundError(f'No checkpoint in {ckpts.directory}: is {workdir} a run?')
        config = ml_collections.ConfigDict(ckpts.read_meta(latest)['config'])
        ckpts.close()
        config.dataset.update(dataset_overrides)
        config.distributed = default_config().distributed  # this process alone
        return cls(config, workdir)

    def restore_best(self) -> int | None:
        """Loads the best checkpoint (by validation accuracy) into ``self.state``."""
        best_step = self.checkpoints.best_step()
        if best_step is not None:
            self.state, _ = self.checkpoints.restore(best_step, self.state)
        return best_step

    def report(self, split: str, result: dict[str, Any]) -> dict[str, Any]:
        """Per-class metrics of an ``evaluate`` result, written to ``<workdir>/eval/<split>.{json,png}``."""
        metrics = evaluation.class_metrics(result['confusion'], self.dataset.class_names)
        metrics['loss'] = result['loss']
        if self.is_primary:
            evaluation.write_report(metrics, self.workdir / 'eval', split)
        return metrics

    def _batch_spec(self, batch_size: int, with_mask: bool) -> dict[str, jax.ShapeDtypeStruct]:
        sharding = steps.batch_sharding(self.mesh)
        spec = {
            'image': jax.ShapeDtypeStruct(
                (batch_size, *self.input_shape), jnp.uint8, sharding=sharding
            ),
            'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sharding),
        }
        if with_mask:
            spec['mask'] = jax.ShapeDtypeStruct((batch_size,), jnp.bool_, sharding=sharding)
        return spec

    def _to_device(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        sharding = steps.batch_sharding(self.mesh)
        return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}

    def evaluate(self, split: str) -> dict[str, Any]:
        """Loss, accuracy and confusion matrix of the current state on ``split``."""
        totals = None
        for batch in pipeline.eval_batches(
            self.dataset.splits[split],
            batch_size=self.config.eval_batch_size,
            center_crop=self.config.input.center_crop,
            shard_index=jax.process_index(),
            num_shards=jax.process_count(),
        ):
            out = self.eval_step(self.state, self._to_device(batch))
            totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
        totals = jax.device_get(totals)
        count = int(totals['count'])
        return {
            'loss': float(totals['loss']) / count,
            'accuracy': float(np.trace(totals['confusion'])) / count,
            'confusion': totals['confusion'],
        }

    def _meta(self) -> dict[str, Any]:
        return {
            **self.identity,
            'progress': dict(self.progress),
            'config': json.loads(self.config.to_json_best_effort()),
        }

    def _clock(self) -> float:
        """Training seconds of the whole run so far (earlier sessions included), as process 0
        counts them: every process must stop at the same step and use the same learning rate."""
        return distributed.agree(self._seconds_before + time.perf_counter() - self._session_start)

    def _out_of_time(self, now: float | None = None) -> bool:
        """Whether the time budget is spent (at ``now``, or the clock read here); remembers
        the clock when it first is."""
        budget = self.config.time_budget_s
        if self._stopped_at is None and budget:
            now = self._clock() if now is None else now
            if now >= budget:
                self._stopped_at = now
        return self._stopped_at is not None

    def _fetch_finite(self, sums: dict) -> dict:
        """Metric sums on the host; stops training if a loss was NaN or infinite."""
        s = jax.device_get(sums)
        bad = int(s['first_nonfinite_step'])
        if bad != steps.NO_STEP:
            self.checkpoints.wait()
            last = self.checkpoints.latest_step()
            kept = (
                f'the last good checkpoint is step {last} in {self.checkpoints.directory}; re-run '
                'to resume from it, e.g. with a lower --config.optimizer.lr'
                if last is not None
                else 'no checkpoint had been saved yet'
            )
            raise FloatingPointError(
                f'Training diverged: the loss at step {bad} was not finite. Nothing from that '
                f'step on was saved: {kept}.'
            )
        return s

    def _train_epoch(self, batches, step: int) -> tuple[int, Any]:
        """Runs steps until the epoch ends or time runs out; returns the step and metric sums."""
        config, spe = self.config, self.steps_per_epoch
        epoch = step // spe
        sums = None
        in_flight: collections.deque = collections.deque()
        bar = tqdm(
            total=spe,
            initial=step - epoch * spe,
            mininterval=1.0,
            desc=f'epoch {epoch + 1}/{config.num_epochs}',
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not self.is_primary,
        )
        while step < (epoch + 1) * spe:
            now = self._clock() if self.schedule.clock == 'seconds' else None
            if self._out_of_time(now):  # (one clock reading a step: a collective if multi-host)
                break
            clock = step if now is None else now
            batch = self._to_device(next(batches))
            self.state, metrics = self.train_step(self.state, batch, np.float32(clock))
            sums = steps.accumulate(sums, metrics)
            in_flight.append(metrics['loss'])
            if len(in_flight) > _MAX_STEPS_IN_FLIGHT:
                in_flight.popleft().block_until_ready()
            step += 1
            bar.update()
            every = config.checkpoint.every_steps
            checkpoint_now = every and step % every == 0 and step % spe
            if step % config.log_every_steps == 0 or checkpoint_now:
                s = self._fetch_finite(sums)
                bar.set_postfix(
                    loss=f'{s["loss"] / s["count"]:.4f}',
                    acc=f'{s["correct"] / s["count"]:.4f}',
                    refresh=False,
                )
            if checkpoint_now:
                self.progress.update(step=step, train_seconds=self._clock())
                self.checkpoints.save(step, self.state, self._meta())
        bar.close()
        jax.block_until_ready(self.state)
        return step, sums

    def run(self) -> dict[str, Any]:
        """Trains until ``num_epochs`` or ``time_budget_s``, then tests the best checkpoint."""
        config, spe = self.config, self.steps_per_epoch
        step = self.progress['step']
        start = time.perf_counter()
        self.train_step = self._train_step.lower(
            self.state,
            self._batch_spec(config.batch_size, with_mask=False),
            jax.ShapeDtypeStruct((), jnp.float32),
        ).compile()
        self.compile_seconds += time.perf_counter() - start
        malloc.keep_freed_memory(self.train_step)
        self.writer = MetricWriter(self.workdir, resume_step=step) if self.is_primary else None
        self._session_start = time.perf_counter()
        self._seconds_before = self.progress['train_seconds']
        self._stopped_at = None
        step_seconds, images = 0.0, 0
        batches = pipeline.train_batches(
            pipeline.train_dataset(
                self.dataset.splits['train'],
                batch_size=config.batch_size,
                seed=config.seed,
                rotation_degrees=config.input.rotation_degrees,
                flip=config.input.flip,
                center_crop=config.input.center_crop,
                shard_index=jax.process_index(),
                num_shards=jax.process_count(),
            ),
            step,
            num_workers=config.input.num_workers,
            prefetch_batches=config.input.prefetch_batches,
        )
        while step < self.total_steps and not self._out_of_time():
            epoch_start, first_step = time.perf_counter(), step
            step, sums = self._train_epoch(batches, step)
            if sums is None:
                break
            trained_seconds = self._clock()
            train_time = time.perf_counter() - epoch_start
            s = self._fetch_finite(sums)
            step_seconds += train_time
            images += int(s['count'])
            valid = self.evaluate('validation')
            self.report('validation', valid)
            if not self._out_of_time():  # validation after the budget ran out is not training
                trained_seconds = self._clock()
            else:
                trained_seconds = min(trained_seconds, self._stopped_at)
            self.progress.update(
                step=step,
                best_valid_accuracy=max(self.progress['best_valid_accuracy'], valid['accuracy']),
                train_seconds=trained_seconds,
            )
            train_loss, train_acc = s['loss'] / s['count'], s['correct'] / s['count']
            lr_clock = trained_seconds if self.schedule.clock == 'seconds' else step
            self.checkpoints.save(step, self.state, self._meta(), valid_accuracy=valid['accuracy'])
            if self.is_primary:
                self.writer.write(
                    step,
                    {
                        'epoch': step / spe,
                        'train_loss': float(train_loss),
                        'train_accuracy': float(train_acc),
                        'valid_loss': valid['loss'],
                        'valid_accuracy': valid['accuracy'],
                        'learning_rate': float(self.schedule.fn(lr_clock)),
                        'images_per_second': (step - first_step) * config.batch_size / train_time,
                        'elapsed_seconds': trained_seconds,
                    },
                )
                tqdm.write(
                    f'epoch {step / spe:.2f}: train loss {train_loss:.4f} acc {train_acc:.4f} | '
                    f'valid loss {valid["loss"]:.4f} acc {valid["accuracy"]:.4f}',
                    file=sys.stderr,
                )
        stopped_by = 'epochs' if step >= self.total_steps else 'time_budget'
        if stopped_by == 'time_budget':
            self.progress['train_seconds'] = self._stopped_at
        batches.close()
        self.checkpoints.wait()
        return self._finish(stopped_by, images / step_seconds if step_seconds else 0.0)

    def _finish(self, stopped_by: str, images_per_second: float) -> dict[str, Any]:
        best_step = self.restore_best()
        test = self.report('test', self.evaluate('test'))
        summary = {
            'model': self.config.model,
            'dataset': self.config.dataset.name,
            'num_params': self.num_params,
            'best_valid_accuracy': self.progress['best_valid_accuracy'],
            'best_step': best_step,
            'test_accuracy': test['accuracy'],
            'test_loss': test['loss'],
            'test_macro_recall': test['macro_recall'],
            'epochs_completed': self.progress['step'] / self.steps_per_epoch,
            'steps': self.progress['step'],
            'stopped_by': stopped_by,
            'train_seconds': self.progress['train_seconds'],
            'images_per_second': images_per_second,
            'compile_seconds': self.compile_seconds,
            'dataset_seconds': self.dataset_seconds,
            'dataset_prepare_seconds': self.dataset.prepare_seconds,
            'peak_rss_mb': _peak_rss_mb(),
            'num_devices': self.num_devices,
            'num_processes': jax.process_count(),
        }
        self.checkpoints.close()
        if not self.is_primary:
            return summary
        _write_json_atomic(self.workdir / 'summary.json', summary)
        self.writer.close()
        print(
            f'{summary["dataset"]} {summary["model"]}: best valid '
            f'{summary["best_valid_accuracy"]:.2%}, test {summary["test_accuracy"]:.2%}, '
            f'{summary["epochs_completed"]:.2f} epochs in {summary["train_seconds"]:.0f} s '
            f'({stopped_by}), {images_per_second:,.0f} img/s, compile '
            f'{self.compile_seconds:.1f} s, data {self.dataset_seconds:.1f} s, '
            f'{self.num_devices} device(s) in {jax.process_count()} process(es) -> '
            f'{self.workdir / "summary.json"}',
            flush=True,
        )
        return summary
