"""Devices and processes: ``jax.distributed`` set up, the device mesh and its shardings.

Every process runs the same program on its own devices; they agree through collectives.
A single process (the default) needs no set-up, and the process helpers are then no-ops.
Parameters, batch statistics and optimizer state are replicated over a 1-D mesh named
``data``; batches are sharded on their first dimension, so gradients and BatchNorm statistics
are global-batch ones whatever the device count.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def initialize(cfg: ml_collections.ConfigDict) -> None:
    """Calls ``jax.distributed.initialize`` when ``config.distributed`` or the environment asks.

    Fields left unset (``''``, 0, -1) are read from ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; with ``auto_detect`` JAX also detects
    SLURM, Open MPI, Kubernetes and Cloud TPU clusters.
    """
    if jax.distributed.is_initialized():
        return
    address = cfg.coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS', '')
    num_processes = cfg.num_processes or int(os.environ.get('JAX_NUM_PROCESSES', 0))
    process_id = cfg.process_id
    if process_id < 0:
        process_id = int(os.environ.get('JAX_PROCESS_ID', -1))
    if not cfg.auto_detect and (not address or num_processes == 1):
        return
    jax.distributed.initialize(
        coordinator_address=address or None,
        num_processes=num_processes or None,
        process_id=process_id if process_id >= 0 else None,
    )


def is_primary() -> bool:
    """Whether this is process 0, the one that writes logs, reports and summaries."""
    return jax.process_index() == 0


def agree(value: float) -> float:
    """Process 0's ``value``, on every process (a collective when there are several)."""
    if jax.process_count() == 1:
        return value
    return float(multihost_utils.broadcast_one_to_all(np.float32(value)))


def barrier(name: str) -> None:
    """Waits until every process gets here."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def create_mesh() -> Mesh:
    """A 1-D mesh named ``data`` over all devices."""
    return Mesh(np.asarray(jax.devices()), ('data',))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays split on their first (batch) dimension over the ``data`` axis."""
    return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
    """Arrays copied whole to every device."""
    return NamedSharding(mesh, P())


def check_divisible(mesh: Mesh, **batch_sizes: int) -> None:
    """Raises if a global batch size cannot be split evenly over the mesh's devices."""
    num_devices = mesh.devices.size
    for name, size in batch_sizes.items():
        if size % num_devices:
            raise ValueError(
                f'{name}={size} is not divisible by the number of devices ({num_devices}).'
            )


def batch_spec(
    mesh: Mesh, batch_size: int, image_shape: Sequence[int], *, with_mask: bool
) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and shardings of a global batch (uint8 images, int32 labels, optional mask),
    to compile a step ahead of time."""
    sharding = batch_sharding(mesh)
    spec = {
        'image': jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.uint8, sharding=sharding),
        'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sharding),
    }
    if with_mask:
        spec['mask'] = jax.ShapeDtypeStruct((batch_size,), jnp.bool_, sharding=sharding)
    return spec


def to_device(mesh: Mesh, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's part of a global batch, as arrays sharded on ``data``."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def jit_train_step(train_step: Callable, mesh: Mesh) -> Callable:
    """jit with the state donated and replicated and the batch sharded on ``data``."""
    rep, data = replicated(mesh), batch_sharding(mesh)
    return jax.jit(
        train_step, donate_argnums=0, in_shardings=(rep, data, rep), out_shardings=(rep, rep)
    )


def jit_eval_step(eval_step: Callable, mesh: Mesh) -> Callable:
    """jit with the model variables replicated and the batch sharded on ``data``."""
    rep, data = replicated(mesh), batch_sharding(mesh)
    return jax.jit(eval_step, in_shardings=(rep, data), out_shardings=rep)
