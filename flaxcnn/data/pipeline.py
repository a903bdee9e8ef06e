"""grain input pipelines: shuffled, augmented, normalized training batches and padded eval batches."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import grain
from absl import flags
import numpy as np

from flaxcnn.data import augment


@dataclasses.dataclass(frozen=True)
class Normalize(grain.transforms.Map):
    """uint8 images -> float32 ``(x - mean) / std`` per channel; labels -> int32."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def map(self, batch):
        mean = np.asarray(self.mean, np.float32)
        inv_std = 1.0 / np.asarray(self.std, np.float32)
        images = (batch['image'].astype(np.float32) - mean) * inv_std
        return {**batch, 'image': images, 'label': batch['label'].astype(np.int32)}


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


def train_dataset(
    source: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    seed: int,
    mean,
    std,
    rotation_degrees: float = 0.0,
    flip: bool = False,
    center_crop: int = 0,
) -> grain.MapDataset:
    """Endless batches: each epoch a new seeded shuffle, then augmentation, batching, normalization.

    Element ``i`` is batch ``i`` of the whole run, so a run's data position is its step.
    Only full batches are used; the remainder of an epoch's shuffle is left out.
    """
    if len(source) < batch_size:
        raise ValueError(
            f'batch_size {batch_size} is larger than the train split ({len(source)} examples).'
        )
    ds = grain.MapDataset.source(source).shuffle(seed=seed)
    if center_crop:
        ds = ds.map(augment.CenterCrop(center_crop))
    if rotation_degrees:
        ds = ds.random_map(augment.RandomRotation(rotation_degrees), seed=seed)
    if flip:
        ds = ds.random_map(augment.RandomFlip(), seed=seed + 1)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.repeat(None).map(Normalize(tuple(mean), tuple(std)))


def train_batches(
    ds: grain.MapDataset, start_step: int, *, num_workers: int, prefetch_batches: int
) -> Iterator[dict[str, np.ndarray]]:
    """Iterates ``train_dataset`` from batch ``start_step`` on."""
    return _iterate(ds[start_step:], num_workers, prefetch_batches)


@dataclasses.dataclass(frozen=True)
class _PadBatch(grain.transforms.Map):
    """Pads a short last batch to ``batch_size``; ``mask`` marks the real examples."""

    batch_size: int

    def map(self, batch):
        n = len(batch['label'])
        pad = self.batch_size - n
        out = {
            k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) if pad else v
            for k, v in batch.items()
        }
        out['mask'] = np.arange(self.batch_size) < n
        return out


def eval_batches(
    source: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    mean,
    std,
    center_crop: int = 0,
    num_workers: int = 0,
    prefetch_batches: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """Every example once, in order, in fixed-size batches with a ``mask``."""
    ds = grain.MapDataset.source(source)
    if center_crop:
        ds = ds.map(augment.CenterCrop(center_crop))
    ds = (
        ds.batch(batch_size, drop_remainder=False)
        .map(_PadBatch(batch_size))
        .map(Normalize(tuple(mean), tuple(std)))
    )
    return _iterate(ds, num_workers, prefetch_batches)
