"""The imported-weights folder: written whole or not at all, read back into a model.

Layout (``FORMAT``)::

  DIR/weights.json   model, num_classes, in_channels, image_size, normalization, the source
                     (file name, sha256, key layout) and, when not the defaults, model_kwargs
  DIR/state/         Orbax StandardCheckpointer item {'params': nnx.State, 'batch_stats':
                     nnx.State}: the same two trees, under the same paths, as the ``params`` and
                     ``batch_stats`` of a run checkpoint's TrainState
"""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from flaxcnn import models
from flaxcnn.convert.files import WeightsError

FORMAT = 'flaxcnn-weights/1'
METADATA = 'weights.json'
STATE = 'state'


def write(out: str | pathlib.Path, model: nnx.Module, metadata: dict[str, Any]) -> pathlib.Path:
    """Saves ``model``'s parameters and BatchNorm statistics with ``metadata`` as folder ``out``.

    Everything goes to a temporary sibling folder that is renamed to ``out`` at the end, so
    ``out`` either does not exist or is complete.
    """
    out = pathlib.Path(out).absolute()
    check_free(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.tmp', dir=out.parent))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(staging / STATE, {'params': params, 'batch_stats': batch_stats})
            checkpointer.wait_until_finished()
        (staging / METADATA).write_text(json.dumps({'format': FORMAT, **metadata}, indent=2) + '\n')
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def check_free(out: str | pathlib.Path) -> None:
    """Refuses an output folder that exists: an import never overwrites."""
    if pathlib.Path(out).exists():
        raise WeightsError(f'{out}: already exists; choose another --out or remove it first.')


def read_metadata(directory: str | pathlib.Path) -> dict[str, Any]:
    """``weights.json`` of an imported-weights folder."""
    path = pathlib.Path(directory) / METADATA
    if not path.is_file():
        raise WeightsError(
            f'{directory}: not an imported-weights folder (no {METADATA}); create one with '
            'python -m flaxcnn.weights import FILE --model=NAME --out=DIR.'
        )
    metadata = json.loads(path.read_text())
    if metadata.get('format') != FORMAT:
        raise WeightsError(f'{path}: format {metadata.get("format")!r}, expected {FORMAT!r}.')
    return metadata


def load_model(directory: str | pathlib.Path) -> tuple[nnx.Module, dict[str, Any]]:
    """The model saved in an imported-weights folder (in eval mode), and its metadata."""
    metadata = read_metadata(directory)
    abstract = models.abstract_model(
        metadata['model'],
        num_classes=metadata['num_classes'],
        in_channels=metadata['in_channels'],
        image_size=metadata['image_size'],
        **metadata.get('model_kwargs', {}),
    )
    graphdef, params, batch_stats = nnx.split(abstract, nnx.Param, nnx.BatchStat)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        {'params': params, 'batch_stats': batch_stats},
    )
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            state = checkpointer.restore(pathlib.Path(directory).absolute() / STATE, target)
    except Exception as e:  # Orbax and TensorStore raise many types for missing or bad files
        first_line = (str(e).splitlines() or [''])[0][:200]
        raise WeightsError(
            f'{directory}: its {STATE}/ cannot be read ({type(e).__name__}: {first_line}); the '
            'folder is damaged or incomplete: import the weights again with python -m '
            'flaxcnn.weights import FILE --model=NAME --out=DIR.'
        ) from None
    model = nnx.merge(graphdef, state['params'], state['batch_stats'])
    model.eval()
    return model, metadata
