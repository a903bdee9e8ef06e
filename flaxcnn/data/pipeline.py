"""grain input pipelines: shuffled uint8 training batches and padded eval batches.

The random augmentation is not here: the train step applies it on the device (``recipes``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import grain
from absl import flags
import numpy as np

from flaxcnn import class_balance as balance
from flaxcnn.data import datasets

# The length of an endless oversampled stream (grain datasets have a length); far beyond a run.
_ENDLESS = 2**40


@dataclasses.dataclass(frozen=True)
class CenterCrop(grain.transforms.Map):
    """Keeps the central ``size`` x ``size`` pixels."""

    size: int

    def map(self, element):
        image = element['image']
        top = (image.shape[0] - self.size) // 2
        left = (image.shape[1] - self.size) // 2
        return {**element, 'image': image[top : top + self.size, left : left + self.size]}


class _Int32Labels(grain.transforms.Map):
    """Labels as the steps take them (images stay uint8: the steps normalize on device)."""

    def map(self, batch):
        return {**batch, 'label': batch['label'].astype(np.int32)}


IMAGENET_MEAN = (123.675, 116.28, 103.53)  # torchvision's, on the 0..255 scale
IMAGENET_STD = (58.395, 57.12, 57.375)


def input_shape(image_shape: Sequence[int], center_crop: int) -> tuple[int, int, int]:
    """Shape of the images the pipeline emits for stored ``image_shape`` (H, W, C)."""
    height, width, channels = image_shape
    if center_crop > min(height, width):
        raise ValueError(
            f'input.center_crop={center_crop} is larger than the stored images ({height}x{width}).'
        )
    return (center_crop, center_crop, channels) if center_crop else (height, width, channels)


def _iterate(ds: grain.MapDataset, num_workers: int, prefetch_batches: int) -> Iterator:
    it_ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch_batches)
    )
    if num_workers > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app
            flags.FLAGS.mark_as_parsed()  # (library use, notebooks) the defaults apply.
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(it_ds)


def _shard_size(batch_size: int, num_shards: int, name: str) -> int:
    if batch_size % num_shards:
        raise ValueError(
            f'{name}={batch_size} is not divisible by the number of processes ({num_shards}).'
        )
    return batch_size // num_shards


def train_dataset(
    source: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    seed: int,
    center_crop: int = 0,
    shard_index: int = 0,
    num_shards: int = 1,
    class_balance: str = 'none',
) -> grain.MapDataset:
    """Endless uint8 batches: each epoch a new seeded shuffle, then batching.

    With ``class_balance='oversample'`` the examples are ``BalancedDraw``s instead (classes
    drawn evenly, epochs of the same length), a function of the seed and the index as well.

    Element ``i`` is global batch ``i`` of the whole run (so a run's data position is its
    step), or with ``num_shards`` processes, this process's rows ``[shard_index * b,
    (shard_index + 1) * b)`` of it, ``b = batch_size / num_shards``: each process reads and
    augments only its own examples, and the global batches are the same for any process
    count. Only full batches are used; the remainder of an epoch's shuffle is left out.
    """
    if len(source) < batch_size:
        raise ValueError(
            f'batch_size {batch_size} is larger than the train split ({len(source)} examples).'
        )
    shard_size = _shard_size(batch_size, num_shards, 'batch_size')
    epoch_size = len(source) // batch_size * batch_size
    if class_balance == 'oversample':
        draw = balance.BalancedDraw(datasets.labels_of(source), epoch_size, seed)
        ds = grain.MapDataset.range(_ENDLESS).map(draw).map(_Lookup(source))
    else:
        # Indices beyond an epoch's length map to the next epoch, reshuffled (grain's epochs).
        ds = grain.MapDataset.source(source).shuffle(seed=seed)[:epoch_size]
    if center_crop:
        ds = ds.map(CenterCrop(center_crop))
    ds = ds.batch(shard_size)
    if class_balance != 'oversample':
        ds = ds.repeat(None)
    return ds[shard_index::num_shards].map(_Int32Labels())


@dataclasses.dataclass(frozen=True)
class _Lookup(grain.transforms.Map):
    """Index -> that example of ``source``."""

    source: Sequence[dict[str, Any]]

    def map(self, index):
        return self.source[index]


def train_batches(
    ds: grain.MapDataset, start_step: int, *, num_workers: int, prefetch_batches: int
) -> Iterator[dict[str, np.ndarray]]:
    """Iterates ``train_dataset`` from batch ``start_step`` on."""
    return _iterate(ds[start_step:], num_workers, prefetch_batches)


@dataclasses.dataclass(frozen=True)
class _ExampleOrPadding(grain.transforms.Map):
    """Index ``k`` -> example ``k`` of ``source`` with ``mask`` True, or zeros with ``mask`` False."""

    source: Sequence[dict[str, Any]]

    def map(self, k):
        if k < len(self.source):
            return {**self.source[k], 'mask': True}
        return {**{k: np.zeros_like(v) for k, v in self.source[0].items()}, 'mask': False}


def eval_batches(
    source: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    center_crop: int = 0,
    shard_index: int = 0,
    num_shards: int = 1,
    num_workers: int = 0,
    prefetch_batches: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """Every example once, in order, in fixed-size batches padded at the end, with a ``mask``.

    With ``num_shards`` processes, this process gets its rows of each global batch (as
    ``train_dataset``).
    """
    shard_size = _shard_size(batch_size, num_shards, 'eval_batch_size')
    num_batches = -(-len(source) // batch_size)
    ds = grain.MapDataset.range(num_batches * batch_size).map(_ExampleOrPadding(source))
    if center_crop:
        ds = ds.map(CenterCrop(center_crop))
    ds = ds.batch(shard_size)[shard_index::num_shards].map(_Int32Labels())
    return _iterate(ds, num_workers, prefetch_batches)
