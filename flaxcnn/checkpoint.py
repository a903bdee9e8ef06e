"""Orbax checkpoints of a run: the latest N plus the best by validation accuracy; runs read back.

A checkpoint holds the ``TrainState`` (params, batch statistics, optimizer state, step,
RNG key) and a JSON ``meta`` item: model and dataset identity, class list, normalization,
the data position (the next batch index, equal to the step), run counters and the config.
Orbax writes each checkpoint to a temporary folder and renames it when complete, so a crash
or kill never leaves a checkpoint that a restart would read half-written. A checkpoint damaged
later (a bad copy, a failing disk) is set aside under ``<workdir>/damaged_checkpoints/`` when
read, never deleted, and the newest intact one is read instead (``Checkpoints.read_intact``).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import tempfile
from typing import Any, Callable

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from flaxcnn import models, recipes, steps
from flaxcnn.data import datasets, pipeline
from flaxcnn.steps import TrainState

VALID_METRIC = 'valid_accuracy'
IDENTITY_KEYS = ('model', 'model_kwargs', 'dataset', 'class_names', 'image_shape', 'mean', 'std')
DAMAGED_DIR = 'damaged_checkpoints'  # beside checkpoints/, where Orbax never looks


class RunMismatchError(ValueError):
    """A workdir's checkpoints belong to another run than the config describes."""


class NoIntactCheckpointError(FileNotFoundError):
    """Every checkpoint of a run was damaged (and has been set aside)."""


def check_writable(workdir: pathlib.Path) -> None:
    """Creates ``workdir`` and raises a clear error if files cannot be written in it."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write_check'):
            pass
    except OSError as e:
        raise PermissionError(
            f'Cannot write to the workdir {workdir}: {e.strerror or e}. Choose a writable '
            '--workdir.'
        ) from e


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


def create_model(identity: dict[str, Any], *, rngs: nnx.Rngs) -> nnx.Module:
    """A freshly initialized model of the run ``identity`` (``run_identity``) describes."""
    height, _, channels = identity['image_shape']
    return models.create_model(
        identity['model'],
        num_classes=len(identity['class_names']),
        in_channels=channels,
        image_size=height,
        rngs=rngs,
        **identity['model_kwargs'],
    )


def check_identity(workdir: pathlib.Path, saved: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raises unless a checkpoint's metadata ``saved`` is of the run ``expected`` describes."""
    for key in IDENTITY_KEYS:
        if json.dumps(saved.get(key), sort_keys=True) != json.dumps(expected[key], sort_keys=True):
            raise RunMismatchError(
                f'{workdir} holds a run with {key}={saved.get(key)!r}, but the config asks for '
                f'{key}={expected[key]!r}. Use another --workdir, or the same {key} to resume '
                '(the learning rate, schedule and epoch count may change on resume).'
            )


def read_arrays(state_dir: str | pathlib.Path) -> Any:
    """A saved ``state`` item as a tree of host arrays, whatever devices wrote it."""
    metadata = ocp.StandardCheckpointer().metadata(state_dir).item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata
    )
    return jax.device_get(ocp.StandardCheckpointer().restore(state_dir, target))


class Checkpoints:
    """The run's ``CheckpointManager`` under ``<workdir>/checkpoints``."""

    def __init__(
        self, workdir: str | pathlib.Path, *, max_to_keep: int = 2, read_only: bool = False
    ):
        """``read_only`` for readers of a run: they create nothing and leave the temporary
        folders of a run that may be saving alone."""
        self.directory = pathlib.Path(workdir).absolute() / 'checkpoints'
        self.set_aside: list[pathlib.Path] = []  # damaged checkpoints moved away, this session
        policy = pp.AnyPreservationPolicy(
            [
                pp.LatestN(n=max_to_keep),
                pp.BestN(
                    get_metric_fn=lambda m: m[VALID_METRIC],
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policy,
                best_fn=lambda m: m[VALID_METRIC],
                best_mode='max',
                create=not read_only,
                cleanup_tmp_directories=not read_only,  # left by a run killed while saving
                read_only=read_only,
                save_interval_steps=0 if read_only else 1,
            ),
            item_names=('state', 'meta'),
        )

    def read_intact(
        self, read: Callable[[int], Any], *, newest: bool = False
    ) -> tuple[int | None, Any]:
        """``(step, read(step))`` of the best checkpoint (the latest with ``newest``) that
        ``read`` succeeds on.

        A checkpoint ``read`` fails on is damaged if its files cannot be read back on their own
        (``verify``): it is set aside and the next one tried, saying so on stderr. Any other
        failure (a mismatched run, a bug) is raised as it is. Raises ``NoIntactCheckpointError``
        when none is left; ``(None, None)`` when there was none.
        """
        while (step := self.latest_step() if newest else self.best_step()) is not None:
            try:
                result = read(step)
            except Exception:
                if (damage := self.verify(step)) is None:
                    raise
                self._set_aside(step, damage)
                continue
            if self.set_aside:
                which = 'newest' if newest else 'best'
                print(
                    f'Continuing from step {step}, the {which} intact checkpoint.', file=sys.stderr
                )
            return step, result
        if self.set_aside:
            raise NoIntactCheckpointError(
                f'No intact checkpoint is left in {self.directory}: the damaged ones are set aside '
                f'in {self.set_aside[0].parent}. To start over, re-run the training command with '
                'this --workdir (it starts from step 0) or another one.'
            )
        return None, None

    def verify(self, step: int) -> str | None:
        """Why checkpoint ``step`` cannot be read back (any file missing, truncated or garbled),
        or None if its state and metadata read back whole."""
        path = self.directory / str(step)
        try:
            json.loads((path / 'meta' / 'metadata').read_text(encoding='utf-8'))
            read_arrays(path / 'state')
        except Exception as e:  # Orbax and TensorStore raise many types for bad files
            first_line = (str(e).splitlines() or [''])[0].split(' See full TensorStore')[0]
            return f'{type(e).__name__}: {first_line[:200]}'
        return None

    def _set_aside(self, step: int, damage: str) -> None:
        """Moves damaged checkpoint ``step`` out of the manager's sight (never deletes it)."""
        source = self.directory / str(step)
        target_dir = self.directory.parent / DAMAGED_DIR
        target_dir.mkdir(exist_ok=True)
        target, n = target_dir / str(step), 1
        while target.exists():
            target, n = target_dir / f'{step}-{n}', n + 1
        source.rename(target)
        self.set_aside.append(target)
        self.manager.reload()
        print(
            f'Checkpoint step {step} at {source} cannot be read ({damage}); set aside as {target}.',
            file=sys.stderr,
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest validation accuracy, or the latest if none has one."""
        best = self.manager.best_step()
        return best if best is not None else self.latest_step()

    def save(
        self,
        step: int,
        state: TrainState,
        meta: dict[str, Any],
        valid_accuracy: float | None = None,
    ) -> None:
        """Saves asynchronously; ``valid_accuracy`` marks an epoch-end candidate for best."""
        metrics = None if valid_accuracy is None else {VALID_METRIC: valid_accuracy}
        try:  # also reports a failure of the previous, asynchronous save
            if metrics is not None and step in self.manager.all_steps():
                # Saved mid-epoch without a score (the time budget ran out right after a
                # periodic save): Orbax skips a step it has, so replace it to rank it.
                self.manager.wait_until_finished()
                self.manager.delete(step)
            self.manager.save(
                step,
                metrics=metrics,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
            )
        except Exception as e:
            raise self._save_error(e) from None

    def _save_error(self, cause: Exception) -> OSError:
        complete = [int(p.name) for p in self.directory.iterdir() if p.name.isdigit()]
        kept = f'step {max(complete)} is' if complete else 'none had been'
        return OSError(
            f'Saving a checkpoint in {self.directory} failed (full disk?): {cause}\n'
            f'The complete checkpoints are untouched ({kept} saved); free some space or choose '
            'another --workdir, then re-run the same command to resume.'
        )

    def read_meta(self, step: int) -> dict[str, Any]:
        """Only the JSON metadata of ``step``."""
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def restore_variables(
        self, step: int, params: Any, batch_stats: Any, *, ema: bool = False
    ) -> tuple[Any, Any]:
        """Only the params and batch statistics of ``step`` (with ``ema``, their moving
        averages), shaped like the abstract ``params`` and ``batch_stats``, on the first local
        device; the optimizer state is never read."""
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        prefix = 'ema_' if ema else ''
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
            {f'{prefix}params': params, f'{prefix}batch_stats': batch_stats},
        )
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=target,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                    partial_restore=True,
                )
            ),
        ).state
        return restored[f'{prefix}params'], restored[f'{prefix}batch_stats']

    def restore(self, step: int, target: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """State (shaped and placed like ``target``) and metadata of ``step``."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.meta

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are complete."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._save_error(e) from None

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        self.manager.close()


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained run read back for inference: its config, metadata and eval-mode model."""

    workdir: pathlib.Path
    step: int  # the checkpoint's
    config: ml_collections.ConfigDict
    meta: dict[str, Any]  # class_names, image_shape, stored_image_shape, mean, std, model, ...
    model: nnx.Module  # eval mode, with the checkpoint's params and batch statistics

    @property
    def class_names(self) -> list[str]:
        return self.meta['class_names']

    @property
    def variables(self) -> tuple[nnx.State, nnx.State]:
        """The model's (params, batch statistics), as ``forward`` reads them."""
        return steps.inference_variables(self.model)

    @property
    def forward(self) -> Callable:
        """The run's inference function (``steps.make_forward``), its normalization and
        test-time augmentation included."""
        return steps.make_forward(
            nnx.graphdef(self.model),
            mean=self.meta['mean'],
            std=self.meta['std'],
            tta=recipes.Recipe.from_config(self.config).tta,
        )


def _not_a_run(workdir: pathlib.Path) -> FileNotFoundError:
    return FileNotFoundError(f'No checkpoint in {workdir / "checkpoints"}: is {workdir} a run?')


def load_run(workdir: str | pathlib.Path, step: int | None = None) -> Run:
    """The run in ``workdir`` at ``step`` (default: its best checkpoint), without an optimizer.

    The model is built abstractly from the saved model name and arguments, then given the
    checkpoint's params and batch statistics: their moving averages where those won the
    checkpoint's validation (``meta['weights'] == 'ema'``).
    """
    workdir = pathlib.Path(workdir)
    if not (workdir / 'checkpoints').is_dir():
        raise _not_a_run(workdir)
    ckpts = Checkpoints(workdir, read_only=True)

    def read(step: int):
        meta = ckpts.read_meta(step)
        abstract = nnx.eval_shape(lambda: create_model(meta, rngs=nnx.Rngs(0)))
        abstract.eval()
        graphdef, params, batch_stats = nnx.split(abstract, nnx.Param, nnx.BatchStat)
        ema = meta.get('weights') == 'ema'
        variables = ckpts.restore_variables(step, params, batch_stats, ema=ema)
        return meta, nnx.merge(graphdef, *variables)

    try:
        if step is None:  # the best intact one
            step, found = ckpts.read_intact(read)
            if step is None:
                raise _not_a_run(workdir)
        else:
            found = read(step)
    finally:
        ckpts.close()
    meta, model = found
    return Run(workdir, step, ml_collections.ConfigDict(meta['config']), meta, model)
