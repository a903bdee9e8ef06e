"""The embedded glyph dataset: TFDS builder, determinism, class list, stored statistics."""

import hashlib

import numpy as np

from flaxcnn.data import datasets, glyph_render


def _digest(path):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.glob('*.array_record*'))
    }


def test_prepared_once_then_cached(smoke_config):
    first = datasets.load(smoke_config.dataset)
    second = datasets.load(smoke_config.dataset)
    assert second.prepare_seconds == 0.0
    assert len(first.splits['train']) == len(second.splits['train'])


def test_same_seed_gives_identical_bytes(smoke_config, tmp_path):
    reference = datasets.builder(smoke_config.dataset)
    datasets.load(smoke_config.dataset)
    smoke_config.dataset.data_dir = str(tmp_path)
    again = datasets.load(smoke_config.dataset)
    assert again.prepare_seconds > 0
    rebuilt = datasets.builder(smoke_config.dataset)
    assert _digest(reference.data_path)
    assert _digest(reference.data_path) == _digest(rebuilt.data_path)


def test_other_seed_gives_other_images(smoke_config):
    a = datasets.load(smoke_config.dataset).splits['test']
    smoke_config.dataset.seed = 1
    b = datasets.load(smoke_config.dataset).splits['test']
    assert not np.array_equal(a[0]['image'], b[0]['image'])


def test_class_list_splits_and_statistics(smoke_config):
    ds = datasets.load(smoke_config.dataset)
    assert ds.class_names == glyph_render.CLASS_NAMES
    assert len(ds.class_names) == 52
    size = smoke_config.dataset.image_size
    assert ds.image_shape == (size, size, 1)
    per_class = {
        'train': smoke_config.dataset.train_per_class,
        'validation': smoke_config.dataset.validation_per_class,
        'test': smoke_config.dataset.test_per_class,
    }
    images = {}
    for split, n in per_class.items():
        records = [ds.splits[split][i] for i in range(len(ds.splits[split]))]
        labels = np.array([r['label'] for r in records])
        np.testing.assert_array_equal(np.bincount(labels, minlength=52), np.full(52, n))
        images[split] = np.stack([r['image'] for r in records])
        assert images[split].dtype == np.uint8
    train = images['train'].astype(np.float64)
    np.testing.assert_allclose(ds.mean, [train.mean()], rtol=1e-6)
    np.testing.assert_allclose(ds.std, [train.std()], rtol=1e-6)
    # No image of the test split is also a train or validation image.
    seen = {img.tobytes() for split in ('train', 'validation') for img in images[split]}
    assert not any(img.tobytes() in seen for img in images['test'])
