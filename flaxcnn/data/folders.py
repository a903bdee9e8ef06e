"""TFDS builders for image-folder datasets read from the user's local copy (never downloaded).

``fruits360`` reads ``Training/<class>/*.jpg`` and ``Test/<class>/*.jpg``; ``chest_xray`` reads
Kaggle's ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``. Either set
``config.dataset.folder`` to the folder that holds the split folders, or put that folder at
``<manual_dir>/<builder name>/`` (TFDS's manual-download convention; ``manual_dir`` is
``<data_dir>/downloads/manual`` by default).

Policies (all recorded in the prepared dataset's metadata):

* Classes: the train split's class folders, sorted by name; every other split must hold the same
  class folders.
* Resize: ``'crop'`` (default) scales the shorter side to ``image_size`` and center-crops the
  longer one (no distortion; already square images such as Fruits-360's pass through unchanged);
  ``'stretch'`` resizes the whole image to a square (keeps the borders, distorts the aspect).
  Lanczos filter; smaller images are upscaled; JPEGs are first decoded at the largest DCT downscale
  (1/2, 1/4 or 1/8) that keeps both sides at least ``image_size`` (PIL's ``draft``), which is
  much faster for the large X-rays. Any PIL mode is converted to 'L' (1 channel) or
  'RGB' (3 channels); 16-bit grayscale keeps its top 8 bits.
* Validation: a provided validation folder is used when each of its classes has at least
  ``min_validation_per_class`` images. Otherwise (Fruits-360 has none; chest_xray's ``val`` has
  16 images) its images, if any, join train, and a stratified ``validation_fraction`` of train is
  carved off, chosen by a seeded hash of each file's path relative to the folder, so the split is
  deterministic and independent of where the folder lives. Carving works on the file list, so
  a bad file is dropped from whichever split it falls in. The test split is used as is.
* Bad files (zero-byte, truncated, corrupt, non-image, unreadable) are named, skipped and counted
  in a report that is printed and written as ``prepare_report.json`` beside the prepared data.
  Hidden files and OS metadata (``.DS_Store``, ``._*``, ``Thumbs.db``, ``desktop.ini``), nested
  folders and files beside the class folders are not images of the dataset: they are ignored
  and listed as such in the report, never counted as bad.
* Mean and std per channel of the written (post-resize) train split go into the metadata,
  counted while it is written (one pass over the images).
* Writing (``sharded``): every split in ``sharded.stored_order`` of its files' keys, decoded
  on all cores and streamed to ArrayRecord shards, so memory stays bounded whatever the
  dataset's size.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import textwrap
import time
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from flaxcnn.data import sharded

_MODES = {1: 'L', 3: 'RGB'}
_RESIZE_POLICIES = ('crop', 'stretch')
_OS_METADATA = frozenset({'thumbs.db', 'desktop.ini', 'ehthumbs.db'})
REPORT_FILE = 'prepare_report.json'
# The ``config.dataset`` fields read by ``FolderConfig`` (the others are optional).
CONFIG_FIELDS = (
    'folder',
    'image_size',
    'channels',
    'resize',
    'validation_fraction',
    'min_validation_per_class',
    'seed',
)


class DatasetError(ValueError):
    """The folder does not hold a dataset in the expected layout, or a class has no readable
    image: the user's data to fix, reported in one line by the commands."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a dataset's splits live under its folder, and how to explain it."""

    split_dirs: dict[str, str]  # split name -> folder name; 'validation' is optional
    tree: str  # the expected layout, shown in errors


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """One candidate image file: its path, its path relative to the folder, its label.

    Strings and slots: a folder of a million files is a million of these in memory.
    """

    path: str
    key: str
    label: int


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """The class list and candidate files of each split folder found, plus ignored entries."""

    root: pathlib.Path
    class_names: tuple[str, ...]
    splits: dict[str, list[Sample]]
    ignored: list[str]


def _ignored_name(name: str) -> bool:
    return name.startswith('.') or name.lower() in _OS_METADATA


def _layout_error(message: str, root: pathlib.Path, layout: Layout) -> str:
    return f'{message}\nExpected this layout under {root}:\n{layout.tree}'


def _hint(root: pathlib.Path, layout: Layout) -> str:
    train_dir = layout.split_dirs['train']
    found = sorted(root.glob(f'*/{train_dir}')) + sorted(root.glob(f'*/*/{train_dir}'))
    return f' Did you mean folder={str(found[0].parent)!r}?' if found else ''


def scan_folder(root: str | os.PathLike, layout: Layout) -> FolderScan:
    """Lists the class folders and candidate files of ``root`` (no decoding); checks the layout."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            _layout_error(f'Dataset folder {root} does not exist.', root, layout)
        )
    class_names = None
    splits, ignored = {}, []
    for split, dirname in layout.split_dirs.items():
        split_dir = root / dirname
        if not split_dir.is_dir():
            if split == 'validation':
                continue
            raise FileNotFoundError(
                _layout_error(
                    f'Split folder {split_dir} is missing.{_hint(root, layout)}', root, layout
                )
            )
        classes = {}
        for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
            if entry.is_dir() and not _ignored_name(entry.name):
                classes[entry.name] = entry.path
            else:
                ignored.append(entry.path)
        if not classes:
            raise DatasetError(_layout_error(f'{split_dir} holds no class folders.', root, layout))
        if class_names is None:
            class_names = tuple(classes)  # the train split comes first
        elif set(classes) != set(class_names):
            missing = sorted(set(class_names) - set(classes))
            extra = sorted(set(classes) - set(class_names))
            raise DatasetError(
                _layout_error(
                    f'{split_dir} does not hold the class folders of '
                    f'{root / layout.split_dirs["train"]}: missing {missing}, extra {extra}.',
                    root,
                    layout,
                )
            )
        samples = []
        for label, name in enumerate(class_names):
            count = len(samples)
            for entry in sorted(os.scandir(classes[name]), key=lambda e: e.name):
                if _ignored_name(entry.name) or entry.is_dir():
                    ignored.append(entry.path)
                else:
                    samples.append(Sample(entry.path, f'{dirname}/{name}/{entry.name}', label))
            if len(samples) == count:
                raise DatasetError(
                    _layout_error(f'Class folder {classes[name]} is empty.', root, layout)
                )
        splits[split] = samples
    return FolderScan(root, class_names, splits, ignored)


def _rank(seed: int, key: str) -> bytes:
    return hashlib.sha256(f'{seed}:{key}'.encode()).digest()


def assign_splits(
    scan: FolderScan, *, validation_fraction: float, min_validation_per_class: int, seed: int
) -> tuple[dict[str, list[Sample]], dict]:
    """Train/validation/test files: the provided validation folder if usable, else carved."""
    num_classes = len(scan.class_names)
    provided = scan.splits.get('validation')
    train = list(scan.splits['train'])
    if provided is not None:
        smallest = int(np.bincount([s.label for s in provided], minlength=num_classes).min())
        if smallest >= min_validation_per_class:
            splits = {'train': train, 'validation': provided, 'test': scan.splits['test']}
            return splits, {'policy': 'provided', 'smallest_class': smallest}
        reason = (
            f'the validation folder has {smallest} images in its smallest class, fewer than '
            f'min_validation_per_class={min_validation_per_class}: its {len(provided)} images '
            'joined train before carving'
        )
        train += provided
    else:
        reason = 'the dataset has no validation folder'
    by_class = collections.defaultdict(list)
    for sample in train:
        by_class[sample.label].append(sample)
    carved_train, validation = [], []
    for label in range(num_classes):
        members = sorted(by_class[label], key=lambda s: _rank(seed, s.key))
        # At least one validation image per class, while train keeps at least one.
        n = min(max(1, round(validation_fraction * len(members))), len(members) - 1)
        validation += members[:n]
        carved_train += members[n:]
    splits = {
        'train': sorted(carved_train, key=lambda s: s.key),
        'validation': sorted(validation, key=lambda s: s.key),
        'test': scan.splits['test'],
    }
    info = {
        'policy': 'carved',
        'reason': reason,
        'fraction': validation_fraction,
        'seed': seed,
        'stratified': True,
    }
    return splits, info


def load_image(
    path: str, *, image_size: int, channels: int, resize: str
) -> tuple[np.ndarray | None, str | None]:
    """``(uint8 image of shape (size, size, channels), None)``, or ``(None, error)`` if bad."""
    try:
        with Image.open(path) as image:
            image.draft(_MODES[channels], (image_size, image_size))  # JPEG: decode downscaled.
            image.load()
            if image.mode.startswith('I;16'):
                image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
            image = image.convert(_MODES[channels])
            size = (image_size, image_size)
            if resize == 'crop':
                image = ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)
            else:
                image = image.resize(size, Image.Resampling.LANCZOS)
    # PIL's decoders raise many exception types on malformed files; any of them means "bad".
    except Exception as e:  # noqa: BLE001
        return None, f'{type(e).__name__}: {e}'
    return np.asarray(image, np.uint8).reshape(image_size, image_size, channels), None


class FolderConfig(tfds.core.BuilderConfig):
    """Image size, channels, resize policy, validation policy, seed and source folder.

    The name encodes all of them (the folder as a short hash of its resolved path, or 'manual'
    for TFDS's manual_dir), so different folders or settings never share prepared data.
    """

    def __init__(
        self,
        *,
        image_size: int,
        channels: int,
        folder: str | None = None,
        resize: str = 'crop',
        validation_fraction: float = 0.1,
        min_validation_per_class: int = 10,
        seed: int = 0,
    ):
        if channels not in _MODES:
            raise ValueError(f'channels must be 1 (grayscale) or 3 (RGB), not {channels!r}.')
        if resize not in _RESIZE_POLICIES:
            raise ValueError(f'resize must be one of {_RESIZE_POLICIES}, not {resize!r}.')
        if not 0 < validation_fraction < 1:
            raise ValueError(f'validation_fraction must be in (0, 1), not {validation_fraction}.')
        if image_size < 1:
            raise ValueError(f'image_size must be positive, not {image_size}.')
        folder = str(pathlib.Path(folder).expanduser().resolve()) if folder else None
        source = f'src{hashlib.sha256(folder.encode()).hexdigest()[:10]}' if folder else 'manual'
        super().__init__(
            name=(
                f'{image_size}px_{channels}ch_{resize}_val{validation_fraction:g}'
                f'-min{min_validation_per_class}_seed{seed}_{source}'
            ),
            description=f'{image_size}x{image_size}x{channels} images ({resize}) from '
            f'{folder or "the manual_dir"}.',
        )
        self.image_size = image_size
        self.channels = channels
        self.folder = folder
        self.resize = resize
        self.validation_fraction = validation_fraction
        self.min_validation_per_class = min_validation_per_class
        self.seed = seed


class _FolderBuilder(sharded.ShardedBuilder, skip_registration=True):
    """Shared logic: scan, assign splits, decode on all cores, report bad files."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        '1.0.0': 'First release.',
    }
    LAYOUT: Layout
    DESCRIPTION: str
    HOMEPAGE: str

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    # Raw bytes: TFDS's default (an int64 per pixel) made preparing
                    # fruits360-mini 6x slower.
                    'image': tfds.features.Tensor(
                        shape=(cfg.image_size, cfg.image_size, cfg.channels),
                        dtype=np.uint8,
                        encoding=tfds.features.Encoding.BYTES,
                    ),
                    # Names come from the class folders (set in _split_streams) or, once
                    # prepared, from the label file beside the data.
                    'label': tfds.features.ClassLabel(),
                }
            ),
            supervised_keys=('image', 'label'),
            homepage=self.HOMEPAGE,
            metadata=tfds.core.MetadataDict(),
        )

    def _source(self, dl_manager) -> pathlib.Path:
        if self.builder_config.folder:
            return pathlib.Path(self.builder_config.folder)
        try:
            return pathlib.Path(dl_manager.manual_dir) / self.name
        except AssertionError as e:  # TFDS's way of saying the manual_dir is missing or empty.
            raise FileNotFoundError(str(e)) from None

    def _download_and_prepare(self, dl_manager, download_config=None):
        start = time.perf_counter()
        self._report = {
            'dataset': self.name,
            'config': self.builder_config.name,
            'splits': {},
            'bad_files': [],
        }  # 'source', 'validation' and 'ignored_files' come from _split_streams.
        super()._download_and_prepare(dl_manager, download_config)
        report = self._report
        report['seconds'] = round(time.perf_counter() - start, 2)
        metadata = self.info.metadata
        metadata['source'] = report['source']
        metadata['resize'] = self.builder_config.resize
        metadata['validation'] = report['validation']
        metadata['splits'] = report['splits']
        metadata['bad_files'] = len(report['bad_files'])
        metadata['ignored_files'] = len(report['ignored_files'])
        (self.data_path / REPORT_FILE).write_text(json.dumps(report, indent=2) + '\n')
        counts = ', '.join(f'{s} {c["examples"]}' for s, c in report['splits'].items())
        print(
            f'{self.name}: prepared {counts} examples from {report["source"]} in '
            f'{report["seconds"]} s; bad files skipped: {len(report["bad_files"])}, '
            f'non-image entries ignored: {len(report["ignored_files"])}; validation: '
            f'{report["validation"]["policy"]}. Report: {REPORT_FILE} beside the data.'
        )
        for bad in report['bad_files']:
            print(f'  bad file skipped ({bad["split"]}): {bad["path"]}: {bad["error"]}')

    def _split_streams(self, dl_manager) -> dict[str, sharded.SplitStream]:
        cfg = self.builder_config
        try:
            scan = scan_folder(self._source(dl_manager), self.LAYOUT)
        except FileNotFoundError as e:
            how = textwrap.dedent(self.MANUAL_DOWNLOAD_INSTRUCTIONS)
            raise FileNotFoundError(f'{e}\n\nHow to get the data:\n{how}') from None
        self.info.features['label'].names = list(scan.class_names)
        splits, validation = assign_splits(
            scan,
            validation_fraction=cfg.validation_fraction,
            min_validation_per_class=cfg.min_validation_per_class,
            seed=cfg.seed,
        )
        self._report.update(
            source=str(scan.root), validation=validation, ignored_files=scan.ignored
        )
        return {
            split: (len(files), self._examples(split, _in_stored_order(files, split)))
            for split, files in splits.items()
        }

    def _examples(self, split: str, files: list[Sample]):
        """``(key, example)`` per file in order (``None`` for a bad file); the split's counts,
        bad files and, for train, pixel statistics are recorded once it has been written."""
        cfg = self.builder_config
        num_classes = len(self.info.features['label'].names)
        load = functools.partial(
            load_image, image_size=cfg.image_size, channels=cfg.channels, resize=cfg.resize
        )
        per_class = np.zeros(num_classes, np.int64)
        histogram = sharded.PixelHistogram(cfg.channels)
        bad = []
        for sample, (image, error) in zip(files, self.map(load, [f.path for f in files])):
            if error is not None:
                bad.append({'path': sample.path, 'split': split, 'error': error})
                yield sample.key, None
                continue
            per_class[sample.label] += 1
            if split == 'train':
                histogram.add(image)
            yield sample.key, {'image': image, 'label': sample.label}
        self._report['bad_files'] += bad
        self._report['splits'][split] = {
            'files': len(files),
            'examples': int(per_class.sum()),
            'bad_files': len(bad),
        }
        if split != 'validation' and not per_class.all():
            empty = [self.info.features['label'].names[i] for i in np.flatnonzero(per_class == 0)]
            raise DatasetError(
                f'No readable image of class(es) {empty} in the {split} split of '
                f'{self._report["source"]}; bad files: {[b["path"] for b in bad]}.'
            )
        if split == 'train':
            self.info.metadata['mean'], self.info.metadata['std'] = histogram.mean_std()


def _in_stored_order(files: list[Sample], split: str) -> list[Sample]:
    return [files[i] for i in sharded.stored_order([f.key for f in files], split)]


class Fruits360(_FolderBuilder):
    """Fruits-360: 100x100 RGB photos of fruits and vegetables, one class per folder."""

    BUILDER_CONFIGS: ClassVar[list[FolderConfig]] = [FolderConfig(image_size=100, channels=3)]
    LAYOUT = Layout(
        split_dirs={'train': 'Training', 'test': 'Test'},
        tree=(
            '  Training/\n'
            '    <class name>/*.jpg   one folder per class, e.g. "Apple Braeburn/0_100.jpg"\n'
            '  Test/\n'
            '    <class name>/*.jpg   the same class folders as Training/'
        ),
    )
    DESCRIPTION = (
        'Fruits-360 (Muresan and Oltean, 2018): fruits and vegetables on a white background, '
        'classes read from the Training/ folders. A validation split is carved from Training/.'
    )
    HOMEPAGE = 'https://github.com/fruits-360'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download Fruits-360 from https://www.kaggle.com/datasets/moltean/fruits or
    https://github.com/fruits-360 and extract it. Then either set config.dataset.folder to the
    folder that holds Training/ and Test/ (e.g. .../fruits-360_dataset/fruits-360), or move or
    symlink that folder to <manual_dir>/fruits360/ (manual_dir is <data_dir>/downloads/manual/ by
    default), so that <manual_dir>/fruits360/Training/<class name>/*.jpg exists.
    """


class ChestXray(_FolderBuilder):
    """Chest X-ray pneumonia (Kermany et al., 2018): NORMAL vs PNEUMONIA, mixed sizes and modes."""

    BUILDER_CONFIGS: ClassVar[list[FolderConfig]] = [FolderConfig(image_size=128, channels=1)]
    LAYOUT = Layout(
        split_dirs={'train': 'train', 'validation': 'val', 'test': 'test'},
        tree=(
            '  train/{NORMAL,PNEUMONIA}/*.jpeg\n'
            '  val/{NORMAL,PNEUMONIA}/*.jpeg    optional; carved from train when too small\n'
            '  test/{NORMAL,PNEUMONIA}/*.jpeg'
        ),
    )
    DESCRIPTION = (
        'Pediatric chest X-rays labelled NORMAL or PNEUMONIA (Kermany et al., Cell 2018), in '
        "Kaggle's layout; its 16-image val/ folder is merged into train and a validation split "
        'is carved instead (see min_validation_per_class).'
    )
    HOMEPAGE = 'https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download chest-xray-pneumonia from
    https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia and extract it. Then
    either set config.dataset.folder to the extracted chest_xray/ folder (the one that holds
    train/, val/ and test/), or move or symlink it to <manual_dir>/chest_xray/ (manual_dir is
    <data_dir>/downloads/manual/ by default). Mendeley's original (data.mendeley.com/datasets/
    rscbjbr9sj) has no val/ folder, which is fine: validation is then carved from train.
    """
