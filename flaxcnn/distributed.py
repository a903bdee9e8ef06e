"""Multi-process runs: ``jax.distributed`` set up from the config or the environment.

Every process runs the same program on its own devices; they agree through collectives.
A single process (the default) needs none of this, and every helper here is then a no-op.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils


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
