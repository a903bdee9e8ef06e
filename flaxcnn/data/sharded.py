"""Writing splits in source order, shard by shard, in bounded memory and without TensorFlow.

TFDS's ``GeneratorBasedBuilder`` passes every split through its shuffler, which keeps up to
1 GB of serialized examples in memory and spills the rest to disk through TensorFlow's file
API (``disable_shuffling`` only changes the sort key: the spill stays). Its
``ShardBasedBuilder`` instead writes each shard straight from a generator, in order, into
the same ArrayRecord files, ``dataset_info.json`` and ``.incomplete`` folder that TFDS
renames once everything is written. ``ShardedBuilder`` feeds it: each split is one ordered
stream of examples computed by worker processes, cut into shards planned up front from the
number of items, so no shard, and no part of the pipeline, holds more than a bounded number
of images.

The records are written in ``stored_order``: the order TFDS's shuffling writer gave them
(by a salted hash of each key, known before any image is decoded). So datasets prepared
before this writer existed hold the same records at the same indices, runs on them reproduce
bit for bit, and the classes are interleaved along the files. The grain pipeline still
shuffles every epoch.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from tensorflow_datasets.core import hashing
from tensorflow_datasets.core.utils import shard_utils

# Image bytes per shard. TFDS's shard writer keeps one shard's examples in memory (it tees the
# stream to count it), so this bounds the memory of writing; TFDS's own smallest shard size.
SHARD_BYTES = shard_utils.DEFAULT_MIN_SHARD_SIZE
# Spawning workers costs a second or two: smaller splits are computed in this process.
MIN_ITEMS_FOR_WORKERS = 512
ITEMS_PER_TASK = 32
TASKS_PER_WORKER_IN_FLIGHT = 4  # bounds the computed examples waiting to be written

Key = int | str
Example = dict[str, Any]
# One split: its number of items and their (key, example) stream, in order. An item whose
# example is None (a bad file) is counted but not written, so shards stay planned by item.
SplitStream = tuple[int, Iterable[tuple[Key, Example | None]]]


def stored_order(keys: Sequence[Key], split: str) -> list[int]:
    """Positions of ``keys`` in the order TFDS's writer stores a split's examples: by the
    md5 of the split name followed by the key (``tfds.core.hashing``)."""
    hasher = hashing.Hasher(split)
    return sorted(range(len(keys)), key=lambda i: hasher.hash_key(keys[i]))


def worker_count() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: a worker whose parent was killed exits instead of waiting forever."""

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """Worker processes started on the first task ('spawn': the parent may already run JAX's
    threads, which fork would copy); they exit if this process is killed."""
    return concurrent.futures.ProcessPoolExecutor(
        workers,
        multiprocessing.get_context('spawn'),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )


def _apply(fn: Callable, items: Sequence) -> list:
    return [fn(item) for item in items]


def ordered_map(
    fn: Callable, items: Sequence, executor: concurrent.futures.Executor, workers: int
) -> Iterator:
    """``fn(item)`` for each item, in order, computed by ``executor`` in tasks of
    ``ITEMS_PER_TASK`` with at most ``TASKS_PER_WORKER_IN_FLIGHT`` tasks per worker pending.
    Short sequences are mapped in this process."""
    if len(items) < MIN_ITEMS_FOR_WORKERS:
        yield from map(fn, items)
        return
    task = functools.partial(_apply, fn)
    in_flight = collections.deque()
    for start in range(0, len(items), ITEMS_PER_TASK):
        in_flight.append(executor.submit(task, items[start : start + ITEMS_PER_TASK]))
        if len(in_flight) >= TASKS_PER_WORKER_IN_FLIGHT * workers:
            yield from in_flight.popleft().result()
    while in_flight:
        yield from in_flight.popleft().result()


class PixelHistogram:
    """Counts of each uint8 value per channel: the exact mean and std of everything added."""

    def __init__(self, channels: int):
        self.counts = np.zeros(channels * 256, np.int64)
        self._offsets = np.arange(channels, dtype=np.intp) * 256

    def add(self, image: np.ndarray) -> None:
        """Adds an (..., channels) uint8 image."""
        self.counts += np.bincount(
            (image.reshape(-1, len(self._offsets)) + self._offsets).ravel(),
            minlength=len(self.counts),
        )

    def mean_std(self) -> tuple[list[float], list[float]]:
        counts = self.counts.reshape(len(self._offsets), 256)
        values = np.arange(256, dtype=np.float64)
        total = counts.sum(1)
        mean = counts @ values / total
        return mean.tolist(), np.sqrt(counts @ values**2 / total - mean**2).tolist()


def shard_sizes(num_items: int, item_bytes: int) -> list[int]:
    """Items per shard: as few shards of at most about ``SHARD_BYTES`` as fit, evened out."""
    num_shards = min(num_items, max(1, -(-num_items * item_bytes // SHARD_BYTES)))
    boundaries = shard_utils.get_shard_boundaries(num_items, num_shards)
    return np.diff([0, *boundaries]).tolist()


def shard_generators(
    stream: Iterable[tuple[Key, Example | None]], sizes: Sequence[int]
) -> list[Callable[[], Iterator[tuple[Key, Example]]]]:
    """One generator function per shard, each taking the next ``size`` items of ``stream``
    (called in order, as TFDS does). The last one runs the stream to its end, so the code
    after its loop (statistics, checks) runs before the split is complete."""
    stream = iter(stream)

    def shard(size: int, last: bool):
        def generate():
            for key, example in itertools.islice(stream, size):
                if example is not None:
                    yield key, example
            if last and next(stream, None) is not None:
                raise AssertionError(f'The stream has more than the planned {sum(sizes)} items.')

        return generate

    return [shard(size, i == len(sizes) - 1) for i, size in enumerate(sizes)]


class ShardedBuilder(tfds.core.ShardBasedBuilder, skip_registration=True):
    """A builder whose splits are ordered streams written shard by shard (see the module doc).

    Subclasses implement ``_split_streams`` and may map work over ``self.map`` (all cores).
    """

    def _split_streams(self, dl_manager) -> dict[str, SplitStream]:
        raise NotImplementedError

    def map(self, fn: Callable, items: Sequence) -> Iterator:
        """``fn`` over ``items`` in order, on all cores (``fn`` must be picklable)."""
        return ordered_map(fn, items, self._executor, self._workers)

    def _download_and_prepare(self, dl_manager, download_config=None):
        self._workers = worker_count()
        with process_pool(self._workers) as self._executor:
            super()._download_and_prepare(dl_manager, download_config)

    def _shard_iterators_per_split(self, dl_manager):
        item_bytes = int(np.prod(self.info.features['image'].shape))
        iterators = {}
        for split, (count, stream) in self._split_streams(dl_manager).items():
            progress = _progress(stream, count, f'{self.name} {split}')
            iterators[split] = shard_generators(progress, shard_sizes(count, item_bytes))
        return iterators


def _progress(stream: Iterable, total: int, desc: str) -> Iterator:
    """``stream`` behind a progress bar with an ETA, started when its first item is asked for
    (TFDS asks for the splits one after the other)."""
    yield from tqdm.tqdm(stream, total=total, desc=desc, unit=' images', mininterval=1.0)
