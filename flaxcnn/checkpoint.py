"""Orbax checkpoints of a run: the latest N plus the best by validation accuracy.

A checkpoint holds the ``TrainState`` (params, batch statistics, optimizer state, step,
RNG key) and a JSON ``meta`` item: model and dataset identity, class list, normalization,
the data position (the next batch index, equal to the step) and run counters. Orbax
writes each checkpoint to a temporary folder and renames it when complete, so a crash
or kill never leaves a checkpoint that a restart would read half-written.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from flaxcnn.steps import TrainState

VALID_METRIC = 'valid_accuracy'


class _MidEpochSaveFilter(logging.Filter):
    """Drops Orbax's warning for saves without metrics: mid-epoch checkpoints have none by
    design (they are never candidates for best), so it would repeat at every one of them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return 'did not provide metrics' not in record.getMessage()


logging.getLogger('absl').addFilter(_MidEpochSaveFilter())


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

    def __init__(self, workdir: str | pathlib.Path, *, max_to_keep: int = 2):
        self.directory = pathlib.Path(workdir).absolute() / 'checkpoints'
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
                create=True,
                cleanup_tmp_directories=True,  # left by a run killed while saving
            ),
            item_names=('state', 'meta'),
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
