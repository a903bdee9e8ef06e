"""Image-folder datasets (fruits360, chest_xray) on small generated folders, plus the real mini set."""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import zlib

import ml_collections
import numpy as np
import pytest
from PIL import Image

from flaxcnn.data import datasets, folders

FRUITS_MINI = pathlib.Path('/work/shared/data/fruits360-mini')
SIZES = ((20, 20), (30, 18), (12, 25))


def _write_image(path: pathlib.Path, size=(20, 20), mode='RGB') -> pathlib.Path:
    """A random image (seeded by its path) saved in the format of its extension."""
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))
    shape = (size[1], size[0]) + ((3,) if mode == 'RGB' else ())
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, np.uint8), mode).save(path)
    return path


def _make_fruits(root, classes=('cherry', 'apple', 'banana'), train=6, test=2):
    for split, n in (('Training', train), ('Test', test)):
        for name in classes:
            for i in range(n):
                ext = 'png' if i % 3 == 2 else 'jpg'
                _write_image(root / split / name / f'{i}_100.{ext}', SIZES[i % 3])
    return root


def _make_chest(root, train=10, val=2, test=3):
    for split, n in (('train', train), ('val', val), ('test', test)):
        for name in ('PNEUMONIA', 'NORMAL'):
            for i in range(n):
                mode = 'L' if i % 2 else 'RGB'
                _write_image(root / split / name / f'im{i}.jpeg', SIZES[i % 3], mode)
    return root


def _config(name, tmp_path, folder, **overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(
        {
            'name': name,
            'data_dir': str(tmp_path / 'data'),
            'folder': str(folder),
            'image_size': 16,
            'channels': 3,
            'validation_fraction': 0.25,
            'seed': 0,
        }
    )
    config.update(overrides)
    return config


def _records(split):
    return [split[i] for i in range(len(split))]


def _report(config) -> dict:
    return json.loads((datasets.builder(config).data_path / folders.REPORT_FILE).read_text())


def test_fruits_classes_shapes_splits_and_statistics(tmp_path):
    root = _make_fruits(tmp_path / 'fruits', classes=('cherry', 'apple', 'banana', 'date'))
    config = _config('fruits360', tmp_path, root)
    ds = datasets.load(config)
    assert ds.class_names == ('apple', 'banana', 'cherry', 'date')
    assert ds.image_shape == (16, 16, 3)
    images, labels = {}, {}
    for split in datasets.SPLITS:
        records = _records(ds.splits[split])
        images[split] = np.stack([r['image'] for r in records])
        labels[split] = np.array([r['label'] for r in records])
        assert images[split].shape[1:] == (16, 16, 3) and images[split].dtype == np.uint8
    # 6 train files per class: round(0.25 * 6) = 2 carved off per class; test (2) untouched.
    np.testing.assert_array_equal(np.bincount(labels['train']), [4] * 4)
    np.testing.assert_array_equal(np.bincount(labels['validation']), [2] * 4)
    np.testing.assert_array_equal(np.bincount(labels['test']), [2] * 4)
    train = images['train'].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(ds.mean, train.mean(0), rtol=1e-9)
    np.testing.assert_allclose(ds.std, train.std(0), rtol=1e-9)
    seen = {image.tobytes() for image in images['train']}
    assert not any(image.tobytes() in seen for image in images['validation'])
    metadata = datasets.builder(config).info.metadata
    assert metadata['validation']['policy'] == 'carved'
    assert metadata['bad_files'] == 0


def test_carved_validation_is_stratified_deterministic_and_leaves_test_alone(tmp_path):
    root = _make_fruits(tmp_path / 'fruits', train=10, test=3)
    scan = folders.scan_folder(root, folders.Fruits360.LAYOUT)
    kwargs = {'validation_fraction': 0.2, 'min_validation_per_class': 10}
    splits, info = folders.assign_splits(scan, seed=0, **kwargs)
    assert info['policy'] == 'carved'
    for label in range(3):
        assert sum(s.label == label for s in splits['validation']) == 2
        assert sum(s.label == label for s in splits['train']) == 8
    train_keys = {s.key for s in splits['train']}
    val_keys = {s.key for s in splits['validation']}
    assert not train_keys & val_keys
    assert train_keys | val_keys == {s.key for s in scan.splits['train']}
    assert splits['test'] == scan.splits['test']
    assert all(key.startswith('Training/') for key in val_keys)
    again, _ = folders.assign_splits(scan, seed=0, **kwargs)
    assert again == splits


def test_carving_does_not_depend_on_where_the_folder_lives(tmp_path):
    root = _make_fruits(tmp_path / 'fruits', train=10, test=1)
    copy = shutil.copytree(root, tmp_path / 'elsewhere' / 'fruits')
    kwargs = {'validation_fraction': 0.2, 'min_validation_per_class': 10}

    def val_keys(folder, seed):
        scan = folders.scan_folder(folder, folders.Fruits360.LAYOUT)
        return {s.key for s in folders.assign_splits(scan, seed=seed, **kwargs)[0]['validation']}

    assert val_keys(root, 0) == val_keys(copy, 0)
    assert val_keys(root, 0) != val_keys(root, 1)


def test_chest_xray_mixed_sizes_and_modes_tiny_val_is_merged_then_carved(tmp_path):
    root = _make_chest(tmp_path / 'chest_xray')
    config = _config('chest_xray', tmp_path, root, channels=1, image_size=24)
    ds = datasets.load(config)
    assert ds.class_names == ('NORMAL', 'PNEUMONIA')
    assert ds.image_shape == (24, 24, 1) and len(ds.mean) == len(ds.std) == 1
    assert ds.splits['train'][0]['image'].shape == (24, 24, 1)
    # val/ has 2 images per class (< 10): they join train (10 + 2 per class), 3 are carved off.
    assert len(ds.splits['validation']) == 2 * 3
    assert len(ds.splits['train']) == 2 * 9
    assert len(ds.splits['test']) == 2 * 3
    validation = datasets.builder(config).info.metadata['validation']
    assert validation['policy'] == 'carved' and 'joined train' in validation['reason']


def test_chest_xray_uses_a_large_enough_val_folder(tmp_path):
    root = _make_chest(tmp_path / 'chest_xray')
    config = _config('chest_xray', tmp_path, root, min_validation_per_class=2)
    ds = datasets.load(config)
    assert ds.image_shape == (16, 16, 3)
    assert (len(ds.splits['train']), len(ds.splits['validation'])) == (20, 4)
    assert datasets.builder(config).info.metadata['validation']['policy'] == 'provided'


def test_resize_policies_and_16_bit_input(tmp_path):
    # 60x20: black, white, black thirds. 'crop' keeps the white middle, 'stretch' the borders.
    pixels = np.zeros((20, 60), np.uint8)
    pixels[:, 20:40] = 255
    Image.fromarray(pixels).save(tmp_path / 'bars.png')
    kwargs = {'image_size': 10, 'channels': 3}
    crop, error = folders.load_image(str(tmp_path / 'bars.png'), resize='crop', **kwargs)
    stretch, _ = folders.load_image(str(tmp_path / 'bars.png'), resize='stretch', **kwargs)
    assert error is None and crop.shape == stretch.shape == (10, 10, 3)
    assert crop.min() > 200 and stretch[:, 0].max() < 50 and stretch[:, 5].min() > 200
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(tmp_path / 'deep.png')
    deep, _ = folders.load_image(
        str(tmp_path / 'deep.png'), image_size=4, channels=1, resize='crop'
    )
    np.testing.assert_array_equal(deep, np.full((4, 4, 1), 40000 >> 8))


def _truncated_jpeg(path: pathlib.Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(buffer, 'JPEG')
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def _unreadable(path: pathlib.Path) -> None:
    _write_image(path)
    path.chmod(0)


@pytest.mark.parametrize(
    'make_bad',
    [
        pytest.param(lambda p: p.write_bytes(b''), id='zero-byte'),
        pytest.param(_truncated_jpeg, id='truncated-jpeg'),
        pytest.param(lambda p: p.write_text('not an image'), id='text-named-jpg'),
        pytest.param(
            _unreadable,
            id='unreadable',
            marks=pytest.mark.skipif(os.geteuid() == 0, reason='root can read any file'),
        ),
    ],
)
def test_bad_file_is_named_in_the_report_and_skipped(tmp_path, capsys, make_bad):
    root = _make_fruits(tmp_path / 'fruits', classes=('apple', 'banana'), train=4, test=1)
    bad = root / 'Training' / 'apple' / 'bad.jpg'
    make_bad(bad)
    (root / 'Training' / 'apple' / '.DS_Store').write_bytes(b'\0\0\0\1Bud1')
    (root / 'Test' / 'banana' / 'Thumbs.db').write_bytes(b'\xd0\xcf')
    config = _config('fruits360', tmp_path, root)
    ds = datasets.load(config)
    assert len(ds.splits['train']) + len(ds.splits['validation']) == 8  # the 9th is bad
    report = _report(config)
    assert [b['path'] for b in report['bad_files']] == [str(bad)]
    assert report['splits']['train']['bad_files'] + report['splits']['validation']['bad_files'] == 1
    assert sorted(pathlib.Path(p).name for p in report['ignored_files']) == [
        '.DS_Store',
        'Thumbs.db',
    ]
    metadata = datasets.builder(config).info.metadata
    assert (metadata['bad_files'], metadata['ignored_files']) == (1, 2)
    assert str(bad) in capsys.readouterr().out


def test_a_class_without_readable_images_is_an_error(tmp_path):
    root = _make_fruits(tmp_path / 'fruits', classes=('apple', 'banana'), train=3, test=1)
    for path in (root / 'Test' / 'banana').iterdir():
        path.write_bytes(b'')
    with pytest.raises(ValueError, match="No readable image of class.*'banana'.*test split"):
        datasets.load(_config('fruits360', tmp_path, root))


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    root = _make_fruits(tmp_path / 'fruits')
    empty = root / 'Training' / 'kiwi'
    empty.mkdir()
    (empty / '.DS_Store').write_bytes(b'')
    with pytest.raises(ValueError, match='Class folder .*kiwi is empty') as error:
        folders.scan_folder(root, folders.Fruits360.LAYOUT)
    assert str(empty) in str(error.value) and 'Training/' in str(error.value)


def test_class_folders_must_match_across_splits(tmp_path):
    root = _make_fruits(tmp_path / 'fruits')
    shutil.rmtree(root / 'Test' / 'apple')
    with pytest.raises(ValueError, match=r"missing \['apple'\]") as error:
        folders.scan_folder(root, folders.Fruits360.LAYOUT)
    assert str(root / 'Test') in str(error.value)


def test_missing_split_or_wrong_root_is_an_error_naming_the_path(tmp_path):
    root = _make_fruits(tmp_path / 'download' / 'fruits-360')
    shutil.rmtree(root / 'Test')
    with pytest.raises(FileNotFoundError, match='Split folder .*Test is missing') as error:
        datasets.load(_config('fruits360', tmp_path, root))
    message = str(error.value)
    assert str(root / 'Test') in message and 'Training/' in message and 'kaggle' in message
    _make_fruits(root)
    # The parent of the right folder: the error says where the layout was found.
    with pytest.raises(FileNotFoundError, match='Did you mean') as error:
        folders.scan_folder(tmp_path / 'download', folders.Fruits360.LAYOUT)
    assert str(root) in str(error.value)
    missing = tmp_path / 'nowhere'
    with pytest.raises(FileNotFoundError, match=f'{missing} does not exist'):
        folders.scan_folder(missing, folders.ChestXray.LAYOUT)
    (tmp_path / 'chest_xray' / 'train').mkdir(parents=True)
    with pytest.raises(ValueError, match='holds no class folders') as error:
        folders.scan_folder(tmp_path / 'chest_xray', folders.ChestXray.LAYOUT)
    assert '{NORMAL,PNEUMONIA}' in str(error.value)


def test_prepared_once_then_cached_and_settings_or_folder_change_the_cache(tmp_path, monkeypatch):
    root = _make_fruits(tmp_path / 'fruits', classes=('apple', 'banana'), train=4, test=1)
    monkeypatch.setenv('HOME', str(tmp_path))
    config = _config('fruits360', tmp_path, '~/fruits')
    assert datasets.builder(config).builder_config.folder == str(root)
    assert datasets.load(config).prepare_seconds > 0
    assert datasets.load(config).prepare_seconds == 0.0
    paths = {datasets.builder(config).data_path}
    config.image_size = 8
    assert datasets.load(config).prepare_seconds > 0
    paths.add(datasets.builder(config).data_path)
    config.folder = str(shutil.copytree(root, tmp_path / 'fruits_copy'))
    assert datasets.load(config).prepare_seconds > 0
    paths.add(datasets.builder(config).data_path)
    assert len(paths) == 3


def test_manual_dir_convention(tmp_path):
    config = _config('fruits360', tmp_path, '')
    with pytest.raises(FileNotFoundError, match='manual'):
        datasets.load(config)
    manual = tmp_path / 'data' / 'downloads' / 'manual' / 'fruits360'
    _make_fruits(manual, classes=('apple', 'banana'), train=4, test=1)
    ds = datasets.load(config)
    assert ds.class_names == ('apple', 'banana')
    assert datasets.builder(config).info.metadata['source'] == str(manual)


@pytest.fixture(scope='session')
def fruits_mini_dataset(tmp_path_factory):
    """fruits360-mini prepared once at 32x32 (about 6 s on 2 busy cores)."""
    if not FRUITS_MINI.is_dir():
        pytest.skip(f'real data not present at {FRUITS_MINI}')
    config = _config('fruits360', tmp_path_factory.mktemp('fruits_mini'), FRUITS_MINI)
    config.image_size = 32
    config.validation_fraction = 0.1
    return config, datasets.load(config)


def test_real_fruits360_mini(fruits_mini_dataset):
    config, ds = fruits_mini_dataset
    class_dirs = sorted(p.name for p in (FRUITS_MINI / 'Training').iterdir() if p.is_dir())
    assert ds.class_names == tuple(class_dirs) and len(class_dirs) == 95
    # 80 train images per class: 8 carved off for validation; 25 test images per class.
    assert len(ds.splits['train']) == 95 * 72
    assert len(ds.splits['validation']) == 95 * 8
    assert len(ds.splits['test']) == 95 * 25
    assert ds.splits['test'][0]['image'].shape == (32, 32, 3)
    assert _report(config)['bad_files'] == []
