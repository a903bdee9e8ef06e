"""How every command starts: the process-wide settings that importing flaxcnn leaves alone.

Each command's ``main`` calls ``start()`` first, so training, evaluation, prediction and the
size table run in the same process set-up whether or not they are started from the shell.
"""

from __future__ import annotations

import logging as std_logging

from absl import flags, logging

from flaxcnn import checkpoint, malloc


def start(verbosity: int = logging.WARNING) -> None:
    """One malloc arena, absl's verbosity (``verbosity`` unless ``--verbosity`` was given) and
    Orbax's per-save warning for mid-epoch checkpoints dropped.

    It must run before XLA starts its threads (the arena limit only binds threads that have not
    allocated yet); XLA creates its CPU client, and its threads, on first use, after this.
    """
    malloc.limit_arenas()
    if not flags.FLAGS['verbosity'].present:  # Orbax logs every save at INFO.
        logging.set_verbosity(verbosity)
    absl_logger = std_logging.getLogger('absl')
    if not any(isinstance(f, checkpoint.MidEpochSaveFilter) for f in absl_logger.filters):
        absl_logger.addFilter(checkpoint.MidEpochSaveFilter())
