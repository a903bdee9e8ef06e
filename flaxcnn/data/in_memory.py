"""Splits decoded once into arrays, so that every epoch after the first costs no decoding.

Decoding a stored record (TFDS features -> numpy) costs far more than a training step spends on
the image, and the training loop would repeat it every epoch in worker processes that compete
with the step for the cores. A small dataset (the glyphs, Fruits-360, chest X-rays) fits in
memory many times over, so training decodes it once, at start, and reads arrays from then on;
with the augmentation on the device (``recipes``) the input pipeline is then an index lookup.
Datasets larger than ``input.in_memory_mb`` stay on disk and are streamed as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from flaxcnn.data import datasets

_CHUNK = 1024  # records decoded per call


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySplit(Sequence):
    """A split as two arrays; element ``i`` is the record ``{'image', 'label'}`` as stored."""

    images: np.ndarray  # [n, height, width, channels] uint8
    labels: np.ndarray  # [n] int64

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index) -> dict[str, Any]:
        return {'image': self.images[index], 'label': self.labels[index]}


def decoded_megabytes(dataset: datasets.Dataset) -> float:
    """The size of all splits' images decoded to uint8, in MB (2**20 bytes)."""
    pixels = int(np.prod(dataset.image_shape))
    return sum(len(split) for split in dataset.splits.values()) * pixels / 2**20


def decode(
    source: Sequence[dict[str, Any]], image_shape, progress: tqdm | None = None
) -> ArraySplit:
    """Every record of ``source`` decoded into an ``ArraySplit``, in order."""
    images = np.empty((len(source), *image_shape), np.uint8)
    labels = np.empty((len(source),), np.int64)
    read_many = getattr(source, '__getitems__', None)  # ArrayRecord reads a chunk at once
    for start in range(0, len(source), _CHUNK):
        indices = list(range(start, min(start + _CHUNK, len(source))))
        records = read_many(indices) if read_many else [source[i] for i in indices]
        for i, record in zip(indices, records):
            images[i] = record['image']
            labels[i] = record['label']
        if progress is not None:
            progress.update(len(indices))
    return ArraySplit(images, labels)


def load(dataset: datasets.Dataset, limit_mb: float, *, progress: bool = True) -> datasets.Dataset:
    """``dataset`` with its splits decoded into memory if they fit in ``limit_mb``, else as is."""
    if not limit_mb or decoded_megabytes(dataset) > limit_mb:
        return dataset
    total = sum(len(split) for split in dataset.splits.values())
    with tqdm(total=total, desc='reading into memory', leave=False, disable=not progress) as bar:
        splits = {
            name: decode(split, dataset.image_shape, bar) for name, split in dataset.splits.items()
        }
    return dataclasses.replace(dataset, splits=splits)
