"""grain pipelines: per-epoch shuffles, determinism, resume position, normalization, eval padding."""

import itertools

import numpy as np
import pytest

from flaxcnn.data import pipeline


def _source(n=20, size=8):
    rng = np.random.default_rng(0)
    return [
        {'image': rng.integers(0, 256, (size, size, 1), np.uint8), 'label': np.int64(i)}
        for i in range(n)
    ]


def _labels(batches, k):
    return [b['label'].tolist() for b in itertools.islice(batches, k)]


def _train(source, **kw):
    args = dict(batch_size=5, seed=0)
    return pipeline.train_dataset(source, **{**args, **kw})


def test_each_epoch_is_a_new_permutation():
    source = _source()
    labels = _labels(
        pipeline.train_batches(_train(source), 0, num_workers=0, prefetch_batches=2), 12
    )
    epochs = [sorted(sum(labels[e * 4 : (e + 1) * 4], [])) for e in range(3)]
    assert all(e == list(range(20)) for e in epochs)
    assert labels[0:4] != labels[4:8] != labels[8:12]


def test_same_seed_same_batches_other_seed_other_batches():
    source = _source()
    run = lambda seed: _labels(
        pipeline.train_batches(_train(source, seed=seed), 0, num_workers=0, prefetch_batches=2), 4
    )
    assert run(0) == run(0)
    assert run(0) != run(1)


def test_resuming_at_a_step_continues_the_same_stream():
    ds = _train(_source())
    full = list(
        itertools.islice(pipeline.train_batches(ds, 0, num_workers=0, prefetch_batches=2), 9)
    )
    resumed = list(
        itertools.islice(pipeline.train_batches(ds, 6, num_workers=0, prefetch_batches=2), 3)
    )
    for a, b in zip(full[6:], resumed):
        np.testing.assert_array_equal(a['image'], b['image'])
        np.testing.assert_array_equal(a['label'], b['label'])


def test_batches_hold_the_stored_uint8_images_and_int32_labels():
    source = _source()
    batch = next(pipeline.train_batches(_train(source), 0, num_workers=0, prefetch_batches=2))
    assert batch['image'].dtype == np.uint8 and batch['label'].dtype == np.int32
    raw = np.stack([source[i]['image'] for i in batch['label']])
    np.testing.assert_array_equal(batch['image'], raw)


def test_batch_larger_than_split_is_an_error():
    with pytest.raises(ValueError, match='larger than the train split'):
        _train(_source(4))


def test_eval_batches_cover_every_example_once_with_a_mask():
    source = _source(13)
    batches = list(pipeline.eval_batches(source, batch_size=5))
    assert [b['image'].shape[0] for b in batches] == [5, 5, 5]
    mask = np.concatenate([b['mask'] for b in batches])
    labels = np.concatenate([b['label'] for b in batches])[mask]
    assert mask.sum() == 13 and labels.tolist() == list(range(13))


def test_worker_processes_give_the_same_batches_outside_an_absl_app():
    ds = _train(_source())
    inline = list(
        itertools.islice(pipeline.train_batches(ds, 3, num_workers=0, prefetch_batches=2), 3)
    )
    workers = pipeline.train_batches(ds, 3, num_workers=1, prefetch_batches=2)
    for a, b in zip(inline, itertools.islice(workers, 3), strict=True):
        np.testing.assert_array_equal(a['image'], b['image'])
    workers.close()


@pytest.mark.parametrize('num_shards', [2, 5])
def test_process_shards_are_the_rows_of_the_global_batches(num_shards):
    ds = lambda **kw: _train(_source(23), batch_size=10, **kw)
    stream = lambda d, start: pipeline.train_batches(d, start, num_workers=0, prefetch_batches=2)
    whole = list(itertools.islice(stream(ds(), 1), 5))  # 2 steps an epoch: crosses epochs
    shards = [
        list(itertools.islice(stream(ds(shard_index=p, num_shards=num_shards), 1), 5))
        for p in range(num_shards)
    ]
    for step, batch in enumerate(whole):
        for key in ('image', 'label'):
            joined = np.concatenate([shards[p][step][key] for p in range(num_shards)])
            np.testing.assert_array_equal(joined, batch[key])


def test_eval_shards_are_the_rows_of_the_global_batches():
    source = _source(13)
    batches = lambda **kw: list(pipeline.eval_batches(source, batch_size=6, **kw))
    whole = batches()
    shards = [batches(shard_index=p, num_shards=3) for p in range(3)]
    assert len(whole) == 3 and all(len(s) == 3 for s in shards)
    for i, batch in enumerate(whole):
        for key in ('image', 'label', 'mask'):
            np.testing.assert_array_equal(np.concatenate([s[i][key] for s in shards]), batch[key])


def test_batch_not_divisible_by_processes_is_an_error():
    with pytest.raises(ValueError, match=r'batch_size=5 is not divisible by the number of proc'):
        _train(_source(), num_shards=2)
