"""Splits decoded into memory: the same records, the same batches, no worker processes."""

import dataclasses
import itertools

import numpy as np

from flaxcnn import training
from flaxcnn.config import default_config
from flaxcnn.data import datasets, in_memory, pipeline


class _Records:
    """A record source like TFDS's: per index, and a chunk at once via ``__getitems__``."""

    def __init__(self, n=37, size=6):
        rng = np.random.default_rng(0)
        self.records = [
            {'image': rng.integers(0, 256, (size, size, 1), np.uint8), 'label': np.int64(i % 5)}
            for i in range(n)
        ]
        self.chunks = 0

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def __getitems__(self, indices):
        self.chunks += 1
        return [self.records[i] for i in indices]


def _dataset(n=37):
    splits = {name: _Records(n) for name in datasets.SPLITS}
    return datasets.Dataset(splits, ('a', 'b', 'c', 'd', 'e'), (6, 6, 1), (0.0,), (1.0,), 0.0)


def test_decoding_keeps_every_record_in_order():
    source = _Records()
    split = in_memory.decode(source, (6, 6, 1))
    assert len(split) == len(source) and source.chunks == 1  # read in chunks, not one by one
    for i in (0, 17, 36):
        np.testing.assert_array_equal(split[i]['image'], source[i]['image'])
        assert split[i]['label'] == source[i]['label']
    assert split.images.dtype == np.uint8 and split.images.shape == (37, 6, 6, 1)


def test_training_batches_are_the_same_from_memory_as_from_the_records():
    source = _Records()
    split = in_memory.decode(source, (6, 6, 1))
    stream = lambda s: pipeline.train_batches(
        pipeline.train_dataset(s, batch_size=8, seed=3), 0, num_workers=0, prefetch_batches=2
    )
    for a, b in zip(itertools.islice(stream(source), 10), itertools.islice(stream(split), 10)):
        np.testing.assert_array_equal(a['image'], b['image'])
        np.testing.assert_array_equal(a['label'], b['label'])


def test_only_datasets_within_the_limit_are_read_into_memory():
    dataset = _dataset()
    megabytes = in_memory.decoded_megabytes(dataset)
    assert megabytes == 3 * 37 * 36 / 2**20
    assert in_memory.load(dataset, megabytes / 2) is dataset
    assert in_memory.load(dataset, 0) is dataset  # 0: always from disk
    loaded = in_memory.load(dataset, megabytes, progress=False)
    assert all(isinstance(s, in_memory.ArraySplit) for s in loaded.splits.values())
    assert dataclasses.replace(loaded, splits=dataset.splits) == dataset


def test_in_memory_data_is_batched_without_worker_processes(monkeypatch):
    config = default_config()
    config.batch_size, config.input.num_workers = 8, 2
    used = []
    monkeypatch.setattr(
        pipeline, 'train_batches', lambda ds, start, num_workers, **kw: used.append(num_workers)
    )
    training.train_batches(config, _dataset())
    training.train_batches(config, in_memory.load(_dataset(), 1.0, progress=False))
    assert used == [2, 0]
