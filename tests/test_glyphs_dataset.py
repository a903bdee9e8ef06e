"""The embedded glyph dataset: TFDS builder, determinism, class list, stored statistics."""

import hashlib

import numpy as np

from flaxcnn.data import datasets, glyph_render


def _digest(ds) -> dict[str, str]:
    """SHA-256 per split over every record's image bytes and label, in order."""
    digests = {}
    for split, source in ds.splits.items():
        h = hashlib.sha256()
        for i in range(len(source)):
            h.update(source[i]['image'].tobytes())
            h.update(int(source[i]['label']).to_bytes(2, 'little'))
        digests[split] = h.hexdigest()
    return digests


def test_prepared_once_then_cached(smoke_config):
    first = datasets.load(smoke_config.dataset)
    second = datasets.load(smoke_config.dataset)
    assert second.prepare_seconds == 0.0
    assert len(first.splits['train']) == len(second.splits['train'])


def test_same_seed_gives_identical_bytes(smoke_config, tmp_path):
    reference = datasets.load(smoke_config.dataset)
    smoke_config.dataset.data_dir = str(tmp_path)
    again = datasets.load(smoke_config.dataset)
    assert again.prepare_seconds > 0  # generated anew, in other worker processes
    assert _digest(reference) == _digest(again)


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
