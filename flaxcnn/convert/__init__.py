"""Import of pretrained PyTorch weights into flaxcnn models (no download: a file you give).

``import_weights(SRC, model=NAME, out=DIR)`` reads a state dict (``files``), fills flaxcnn's
model from it through the source's key layout (``mapping`` plus one module per layout) and
writes an imported-weights folder (``folder``: ``weights.json`` + an Orbax ``state`` item of
params and BatchNorm statistics, the same trees as a run checkpoint's). Class count and input
channels come from the file, so a fine-tuned state dict with another head imports too.
A later run can start from the folder by parameter path and shape; ``load_model(DIR)`` gives
the model back.
"""

from __future__ import annotations

import pathlib
from typing import Any

from flaxcnn import models
from flaxcnn.convert import mit_proxylessnas, torchvision_resnet
from flaxcnn.convert.files import WeightsError, read_state_dict, sha256
from flaxcnn.convert.folder import check_free, load_model, read_metadata, write
from flaxcnn.convert.mapping import Layout, fill, model_size

# flaxcnn model name -> the layout its pretrained files come in.
LAYOUTS: dict[str, Layout] = {
    layout.model: layout for layout in (torchvision_resnet.LAYOUT, mit_proxylessnas.LAYOUT)
}


def import_weights(
    source: str | pathlib.Path,
    *,
    model: str,
    out: str | pathlib.Path,
    image_size: int | None = None,
) -> dict[str, Any]:
    """Converts the weights file ``source`` for flaxcnn model ``model`` into folder ``out``.

    ``image_size`` (default: the size the source network was trained at) is recorded for the
    runs that start from these weights. Returns the metadata written to ``weights.json``.
    """
    source = pathlib.Path(source)
    if model not in LAYOUTS:
        raise WeightsError(
            f'No pretrained-weights layout for model {model!r}; importable: '
            f'{", ".join(sorted(LAYOUTS))}.'
        )
    check_free(out)  # before the conversion, which takes a while
    layout = LAYOUTS[model]
    tensors = read_state_dict(source)
    num_classes, in_channels = model_size(layout, tensors, source)
    image_size = image_size or layout.image_size
    network = models.abstract_model(
        model, num_classes=num_classes, in_channels=in_channels, image_size=image_size
    )
    fill(network, layout, tensors, source)
    metadata = {
        'model': model,
        'num_classes': num_classes,
        'in_channels': in_channels,
        'image_size': image_size,
        'normalization': layout.normalization,
        'source': {'file': source.name, 'sha256': sha256(source), 'layout': layout.name},
    }
    write(out, network, metadata)
    return metadata


__all__ = ['LAYOUTS', 'WeightsError', 'import_weights', 'load_model', 'read_metadata']
