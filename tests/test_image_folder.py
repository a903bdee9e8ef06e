"""dataset.name='image_folder': every layout it detects, a label file, auto channels, the
presets' caches, the bad inputs of issue 17, and configs/folder_cnn.py trained end to end."""

from __future__ import annotations

import json
import pathlib

import ml_collections
import numpy as np
import pytest
from helpers import load_config
from PIL import Image

from flaxcnn.data import datasets, folders, layouts
from flaxcnn.data.layouts import DatasetError


def _image(path: pathlib.Path, value: int = -1, *, noise=0, mode='L', size=(12, 12), **save):
    """A small image file: ``value`` plus up to ``noise``, or any noise when -1 (seeded by the
    file name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {'L': (), 'RGB': (3,), 'CMYK': (4,)}[mode]
    shape = (size[1], size[0], *channels)
    rng = np.random.default_rng(sum(path.name.encode()))
    if value < 0:
        pixels = rng.integers(0, 256, shape)
    else:
        pixels = value + rng.integers(0, noise + 1, shape)
    Image.fromarray(pixels.astype(np.uint8), mode).save(path, **save)
    return str(path)


def _classes(root: pathlib.Path, counts: dict[str, int], mode='L') -> pathlib.Path:
    for name, n in counts.items():
        for i in range(n):
            _image(root / name / f'{name}{i}.png', mode=mode)
    return root


def _config(tmp_path, folder='', **fields) -> ml_collections.ConfigDict:
    config = load_config('folder_cnn').dataset
    config.update(data_dir=str(tmp_path / 'data'), folder=str(folder), image_size=8)
    config.update(fields)
    return config


def test_split_folders_any_spelling_and_case_distinct_classes(tmp_path, capsys, monkeypatch):
    root = tmp_path / 'kaggle'
    _classes(root / 'Training', {'a': 4, 'A': 3})
    _classes(root / 'VALID', {'a': 2, 'A': 2})
    _classes(root / 'testing', {'a': 1, 'A': 2})
    config = _config(tmp_path, root, min_validation_per_class=2)
    ds = datasets.load(config)
    assert ds.class_names == ('A', 'a')  # two classes, in code-point order
    assert ds.class_counts == {'train': (3, 4), 'validation': (2, 2), 'test': (2, 1)}
    assert ds.image_shape == (8, 8, 1)  # channels=0: every image is grayscale
    printed = capsys.readouterr().out
    assert "2 classes (label=name): 0='A', 1='a'" in printed
    assert 'train 7, validation 4, test 3 examples' in printed and '(split folders)' in printed
    # Once prepared, the channels are read from the data (a new process: no scan).
    folders._resolved_channels.clear()
    monkeypatch.setattr(folders, 'is_grayscale', None)
    assert datasets.load(config).image_shape == (8, 8, 1)
    assert capsys.readouterr().out == ''  # printed once: when prepared


def test_class_folders_only_carve_validation_and_test_stratified(tmp_path):
    root = _classes(tmp_path / 'photos', {'cat': 20, 'dog': 10})
    config = _config(tmp_path, root, validation_fraction=0.2, test_fraction=0.1)
    ds = datasets.load(config)
    assert ds.class_counts == {'train': (14, 7), 'validation': (4, 2), 'test': (2, 1)}
    keys = {}
    scan = layouts.detect(root)
    assert scan.layout == 'class folders'
    for seed in (0, 0, 1):
        splits, info = folders.assign_splits(
            scan, validation_fraction=0.2, min_validation_per_class=10, seed=seed
        )
        keys.setdefault(seed, []).append({s: [x.key for x in v] for s, v in splits.items()})
    assert keys[0][0] == keys[0][1] and keys[0][0]['test'] != keys[1][0]['test']
    assert info['test'] == {'policy': 'carved', 'fraction': 0.1, 'seed': 1}
    every = sorted(k for split in keys[0][0].values() for k in split)
    assert every == sorted(s.key for s in scan.splits['train'])


def test_label_file_with_split_column_and_paths_relative_to_it(tmp_path):
    root = tmp_path / 'dataset'
    rows = ['filename,class,split']
    for i in range(6):
        for label in ('ok', 'defect'):
            split = 'train' if i < 4 else 'Val' if i == 4 else 'TEST'
            _image(root / 'images' / f'{label}{i}.jpg', mode='RGB')
            rows.append(f'images/{label}{i}.jpg,{label},{split}')
    (root / 'labels.csv').write_text('\n'.join(rows) + '\n')
    config = _config(tmp_path, root, labels='labels.csv', min_validation_per_class=1)
    ds = datasets.load(config)
    assert ds.class_names == ('defect', 'ok') and ds.image_shape == (8, 8, 3)
    assert ds.class_counts == {'train': (4, 4), 'validation': (1, 1), 'test': (1, 1)}
    # Headerless whitespace text: path, label; the folder's root is the file's folder here.
    (root / 'images' / 'list.txt').write_text('ok0.jpg ok\nok1.jpg ok\ndefect0.jpg defect\n')
    scan = layouts.read_label_file(root / 'images' / 'list.txt', root)
    assert [(s.key, s.label) for s in scan.splits['train']] == [
        ('images/defect0.jpg', 0),
        ('images/ok0.jpg', 1),
        ('images/ok1.jpg', 1),
    ]


def test_explicit_split_folders(tmp_path):
    root = tmp_path / 'odd'
    _classes(root / 'learn', {'x': 3, 'y': 3})
    _classes(root / 'exam', {'x': 1, 'y': 1})
    config = _config(tmp_path, root, validation_fraction=0.3)
    config.splits.train, config.splits.test = 'learn', 'exam'
    ds = datasets.load(config)
    assert ds.class_counts == {'train': (2, 2), 'validation': (1, 1), 'test': (1, 1)}


def test_unknown_layout_names_the_layouts_it_knows(tmp_path):
    (tmp_path / 'flat').mkdir()
    _image(tmp_path / 'flat' / 'loose.png')
    with pytest.raises(DatasetError, match='not in a layout flaxcnn knows') as error:
        layouts.detect(tmp_path / 'flat')
    for layout in ('split folders', 'class folders only', 'a label file', 'explicit split'):
        assert layout in str(error.value)


def test_cache_names_do_not_depend_on_case_and_presets_keep_theirs(tmp_path):
    def name(**splits):
        config = _config(tmp_path, tmp_path, channels=1)
        config.splits.update(splits)
        return datasets.builder(config).builder_config.name

    upper, lower = name(train='Train'), name(train='train')
    assert upper.lower() != lower.lower() and upper == upper.lower()
    # The presets keep the builder and config name of the data they prepared before; version
    # 1.1.0 (layout-independent carving) is prepared beside 1.0.0.
    config = load_config('fruits_cnn').dataset
    config.update(data_dir=str(tmp_path), folder='/data/fruits')
    b = datasets.builder(config)
    assert (b.name, str(b.version)) == ('fruits360', '1.1.0')
    assert b.builder_config.name == '100px_3ch_crop_val0.1-min10_seed0_src' + (
        folders._short_hash('/data/fruits')
    )


def test_auto_channels_are_color_when_any_image_is(tmp_path):
    root = _classes(tmp_path / 'mixed', {'p': 3, 'q': 3})
    _image(root / 'q' / 'color.png', mode='RGB')
    assert datasets.load(_config(tmp_path, root)).image_shape == (8, 8, 3)


def _label_file(tmp_path, *lines: str) -> pathlib.Path:
    for name in ('a.png', 'b.png', 'c.png'):
        _image(tmp_path / 'set' / name)
    _image(tmp_path / 'outside.png')
    path = tmp_path / 'set' / 'labels.csv'
    path.write_text('\n'.join(['path,label', *lines]) + '\n')
    return path


@pytest.mark.parametrize(
    'lines, message',
    [
        (('a.png,x', 'missing.png,y'), r'labels.csv line 3: .missing.png. is not a file'),
        (('a.png,x', '../outside.png,y'), r'line 3: .\.\./outside.png. is outside the folder'),
        (('a.png,x', 'b.png,'), r'line 3: the label of .b.png. is empty'),
        (('a.png,x', 'b.png,y', './a.png,x'), r'lines 2 and 4: .\./a.png. is listed twice'),
    ],
    ids=['missing-path', 'outside', 'empty-label', 'listed-twice'],
)
def test_bad_label_files_are_one_clear_error(tmp_path, lines, message):
    file = _label_file(tmp_path, *lines)
    with pytest.raises(DatasetError, match=message):
        layouts.read_label_file(file, file.parent)


def test_a_class_with_one_image_cannot_be_carved_and_is_named(tmp_path):
    root = _classes(tmp_path / 'few', {'many': 5, 'lonely': 1})
    with pytest.raises(DatasetError, match="Class 'lonely' has 1 image.*at least 3"):
        datasets.load(_config(tmp_path, root))
    assert not list((tmp_path / 'data').glob('image_folder/*/[0-9]*'))  # no version prepared


def test_a_split_with_classes_train_lacks_is_an_error(tmp_path):
    root = tmp_path / 'splits'
    _classes(root / 'train', {'a': 2, 'b': 2})
    _classes(root / 'test', {'a': 1, 'b': 1, 'c': 1})
    with pytest.raises(DatasetError, match=r"missing \[\], extra \['c'\]"):
        layouts.detect(root)


def test_all_blank_images_are_an_error(tmp_path):
    root = tmp_path / 'blank'
    for name in ('a', 'b'):
        for i in range(4):
            _image(root / name / f'{i}.png', 255)
    with pytest.raises(DatasetError, match='Every readable image of the train split.*is blank'):
        datasets.load(_config(tmp_path, root))


def test_deep_cmyk_huge_and_rotated_images(tmp_path, monkeypatch):
    load = {'image_size': 4, 'resize': 'stretch'}
    deep = tmp_path / 'deep.png'
    Image.fromarray(np.full((6, 6), 50000, np.uint16)).save(deep)
    pixels, error = folders.load_image(str(deep), channels=1, **load)
    assert error is None and (pixels == 50000 >> 8).all()
    cmyk = _image(tmp_path / 'cmyk.jpg', 0, mode='CMYK')  # no ink: white
    pixels, error = folders.load_image(cmyk, channels=3, **load)
    assert error is None and pixels.min() > 240
    # EXIF orientation 6 (turn 90 degrees clockwise to view): a tall image stored wide.
    stored = np.zeros((4, 8), np.uint8)
    stored[:, :4] = 255  # the left half is the top half once turned
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / 'turned.png', exif=exif)
    pixels, _ = folders.load_image(str(tmp_path / 'turned.png'), channels=1, **load)
    assert pixels[:1].min() > 200 and pixels[3:].max() < 50
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 10)  # PIL refuses twice this many
    pixels, error = folders.load_image(cmyk, channels=3, **load)
    assert pixels is None and error.startswith('too large to decode safely')


@pytest.mark.slow  # a whole training run: compiles both steps
def test_folder_cnn_trains_on_an_imbalanced_binary_folder(tmp_path):
    from flaxcnn import training
    from flaxcnn.predict import Predictor, decision_threshold

    root = tmp_path / 'xray'
    for name, n, value in (('NORMAL', 12, 60), ('PNEUMONIA', 24, 190)):
        for i in range(n):
            _image(root / name / f'{i}.png', value, noise=20)
    config = load_config('folder_cnn')
    config.dataset.update(data_dir=str(tmp_path / 'data'), folder=str(root), image_size=16)
    config.dataset.validation_fraction = 0.25
    config.dataset.test_fraction = 0.25
    config.input.update(num_workers=0, flip=False, class_balance='weighted_loss')
    config.model_kwargs = ml_collections.ConfigDict({'widths': (4,), 'hidden': 8})
    config.update(batch_size=8, eval_batch_size=16, num_epochs=1)
    config.checkpoint.every_steps = 0
    summary = training.train_and_evaluate(config, tmp_path / 'run')
    assert summary['positive_class'] == 'PNEUMONIA'
    assert summary['class_counts'] == {'train': [7, 14], 'validation': [2, 4], 'test': [3, 6]}
    for field in ('test_balanced_accuracy', 'test_macro_f1', 'test_sensitivity', 'threshold'):
        assert field in summary
    test = json.loads((tmp_path / 'run' / 'eval' / 'test.json').read_text())
    assert test['binary']['roc_auc'] == summary['test_roc_auc']
    assert (tmp_path / 'run' / 'eval' / 'test_roc.png').read_bytes()[:4] == b'\x89PNG'
    positive, threshold = decision_threshold(str(tmp_path / 'run'), 'auto')
    assert (positive, threshold) == ('PNEUMONIA', summary['threshold'])
    predictor = Predictor(str(tmp_path / 'run'))
    assert predictor.load(str(root / 'NORMAL' / '0.png')).shape == (16, 16, 1)


def _records(config) -> dict[str, list[tuple[bytes, int]]]:
    ds = datasets.load(config)
    return {
        split: [(r['image'].tobytes(), int(r['label'])) for r in source]
        for split, source in ds.splits.items()
    }


def test_the_same_files_in_any_layout_prepare_the_same_splits(tmp_path):
    """Carving and record order follow class and file names, not the folders around them."""
    first, second = tmp_path / 'first', tmp_path / 'second'
    for root, train, test in ((first, 'Training', 'Test'), (second, 'train', 'TESTING')):
        _classes(root / train, {'x': 12, 'y': 9})
        _classes(root / test, {'x': 3, 'y': 3})
    labels = tmp_path / 'labels.csv'
    rows = [f'first/{s}/{c}/{c}{i}.png,{c},{s.lower()}' for s, n in (('Training', 12), ('Test', 3))
            for c in 'xy' for i in range(n if c == 'x' or s == 'Test' else 9)]  # fmt: skip
    labels.write_text(
        'path,label,split\n' + '\n'.join(r.replace(',training', ',train') for r in rows)
    )
    reference = _records(_config(tmp_path, first, validation_fraction=0.25))
    assert len(reference['validation']) == 3 + 2  # carved: a quarter of each class
    assert _records(_config(tmp_path, second, validation_fraction=0.25)) == reference
    by_file = _config(tmp_path, labels=str(labels), validation_fraction=0.25)
    assert _records(by_file) == reference
