"""TFDS builders for image-folder datasets read from the user's local copy (never downloaded).

``image_folder`` reads any folder in a layout ``layouts.detect`` knows (split folders, class
folders only, a label file, explicit split folders). Its presets fix one layout and keep their
own builder name, so data they prepared before stays valid: ``fruits360`` reads
``Training/<class>/*.jpg`` and ``Test/<class>/*.jpg``; ``chest_xray`` reads Kaggle's
``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``. For a preset, either set
``config.dataset.folder`` to the folder that holds the split folders, or put that folder at
``<manual_dir>/<builder name>/`` (TFDS's manual-download convention; ``manual_dir`` is
``<data_dir>/downloads/manual`` by default).

Policies (all recorded in the prepared dataset's metadata):

* Classes: the train split's class folders (or labels), sorted by code point, case kept (``A``
  and ``a`` are two classes); every other split must hold the same classes. Printed once, in
  label order, with the split sizes, when prepared; counts per class and split in the metadata.
* Channels: 1 or 3, or 0 for 1 when every image file is grayscale, else 3.
* Resize: ``'crop'`` (default) scales the shorter side to ``image_size`` and center-crops the
  longer one (no distortion; already square images such as Fruits-360's pass through unchanged);
  ``'stretch'`` resizes the whole image to a square (keeps the borders, distorts the aspect).
  Lanczos filter; smaller images are upscaled; JPEGs are first decoded at the largest DCT downscale
  (1/2, 1/4 or 1/8) that keeps both sides at least ``image_size`` (PIL's ``draft``), which is
  much faster for the large X-rays. Any PIL mode is converted to 'L' (1 channel) or
  'RGB' (3 channels) after turning the image as its EXIF orientation says; 16-bit grayscale
  keeps its top 8 bits; images too large for PIL to decode safely are bad files.
* Validation: a provided validation folder is used when each of its classes has at least
  ``min_validation_per_class`` images. Otherwise (Fruits-360 has none; chest_xray's ``val`` has
  16 images) its images, if any, join train, and a stratified ``validation_fraction`` of train is
  carved off, chosen by a seeded hash of each file's class and file name (``_file_id``), so the
  split is deterministic and the same in every layout of the same files and wherever they live. Carving works on the file list, so
  a bad file is dropped from whichever split it falls in. The test split is used as is; a
  dataset without one has a stratified ``test_fraction`` carved from train first. A class too
  small to carve from is an error that names it.
* Bad files (zero-byte, truncated, corrupt, non-image, unreadable) are named, skipped and counted
  in a report that is printed and written as ``prepare_report.json`` beside the prepared data.
  Hidden files and OS metadata (``.DS_Store``, ``._*``, ``Thumbs.db``, ``desktop.ini``), nested
  folders and files beside the class folders are not images of the dataset: they are ignored
  and listed as such in the report, never counted as bad. A train split whose every image is
  one flat color is an error.
* Mean and std per channel of the written (post-resize) train split go into the metadata,
  counted while it is written (one pass over the images).
* Writing (``sharded``): every split in ``sharded.stored_order`` of its files' ids, decoded
  on all cores and streamed to ArrayRecord shards, so memory stays bounded whatever the
  dataset's size.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import pathlib
import textwrap
import time
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from flaxcnn.data import layouts, sharded

# The layout types live in layouts.py; builders and tests know them by these names too.
from flaxcnn.data.layouts import DatasetError, FolderScan, Layout, Sample, scan_folder

_MODES = {1: 'L', 3: 'RGB'}
_RESIZE_POLICIES = ('crop', 'stretch')
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
    'test_fraction',
    'labels',
    'splits',
    'path_column',
    'label_column',
    'split_column',
)


def _rank(seed: int, key: str) -> bytes:
    return hashlib.sha256(f'{seed}:{key}'.encode()).digest()


def _file_id(sample: Sample, class_names: tuple[str, ...]) -> str:
    """A file's name in every layout: its class and file name, not the folders it sits in."""
    return f'{class_names[sample.label]}/{sample.key.rsplit("/", 1)[-1]}'


def _carve(
    samples: list[Sample], class_names: tuple[str, ...], fraction: float, seed: int, salt: str
) -> tuple[list[Sample], list[Sample]]:
    """(kept, carved), stratified: per class at least one carved and one kept, chosen by a
    seeded hash of each key (so independent of where the folder lives), each sorted by key."""
    by_class = collections.defaultdict(list)
    for sample in samples:
        by_class[sample.label].append(sample)
    kept, carved = [], []
    for label in range(len(class_names)):
        members = sorted(
            by_class[label], key=lambda s: (_rank(seed, salt + _file_id(s, class_names)), s.key)
        )
        n = min(max(1, round(fraction * len(members))), len(members) - 1)
        carved += members[:n]
        kept += members[n:]
    return sorted(kept, key=lambda s: s.key), sorted(carved, key=lambda s: s.key)


def _check_carvable(scan: FolderScan, samples: list[Sample], carved: list[str]) -> None:
    counts = np.bincount([s.label for s in samples], minlength=len(scan.class_names))
    needed = len(carved) + 1
    for label in np.flatnonzero(counts < needed):
        raise DatasetError(
            f'Class {scan.class_names[label]!r} has {counts[label]} image(s) in the train split '
            f'of the {scan.layout} under {scan.root}: {" and ".join(carved)} are carved from it '
            f'stratified, which needs at least {needed}. Add images or remove the class.'
        )


def assign_splits(
    scan: FolderScan,
    *,
    validation_fraction: float,
    min_validation_per_class: int,
    seed: int,
    test_fraction: float = 0.1,
) -> tuple[dict[str, list[Sample]], dict]:
    """Train/validation/test files: the provided test split, else carved from train; the
    provided validation split if usable, else carved (stratified, seeded) from train."""
    num_classes = len(scan.class_names)
    provided = scan.splits.get('validation')
    train = list(scan.splits['train'])
    info: dict = {}
    if provided is not None:
        smallest = int(np.bincount([s.label for s in provided], minlength=num_classes).min())
        if smallest >= min_validation_per_class:
            info = {'policy': 'provided', 'smallest_class': smallest}
        else:
            reason = (
                f'the validation folder has {smallest} images in its smallest class, fewer '
                f'than min_validation_per_class={min_validation_per_class}: its '
                f'{len(provided)} images joined train before carving'
            )
            train += provided
    else:
        reason = 'the dataset has no validation folder'
    carved = [] if 'test' in scan.splits else ['test']
    carved += [] if info else ['validation']
    _check_carvable(scan, train, carved)
    if 'test' in scan.splits:
        test = scan.splits['test']
    else:
        train, test = _carve(train, scan.class_names, test_fraction, seed, 'test:')
    if info:
        validation = provided
    else:
        train, validation = _carve(train, scan.class_names, validation_fraction, seed, '')
        info = {
            'policy': 'carved',
            'reason': reason,
            'fraction': validation_fraction,
            'seed': seed,
            'stratified': True,
        }
    if 'test' in carved:
        info['test'] = {'policy': 'carved', 'fraction': test_fraction, 'seed': seed}
    return {'train': train, 'validation': validation, 'test': test}, info


def load_image(
    path: str, *, image_size: int, channels: int, resize: str
) -> tuple[np.ndarray | None, str | None]:
    """``(uint8 image of shape (size, size, channels), None)``, or ``(None, error)`` if bad.

    The image is turned as its EXIF orientation says (as a viewer shows it); CMYK, palette and
    16-bit images are converted like any other mode."""
    try:
        with Image.open(path) as image:
            image.draft(_MODES[channels], (image_size, image_size))  # JPEG: decode downscaled.
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith('I'):  # 16-bit (or 32-bit integer) grayscale
                deep = np.asarray(image).astype(np.int64) >> 8
                image = Image.fromarray(np.clip(deep, 0, 255).astype(np.uint8))
            image = image.convert(_MODES[channels])
            size = (image_size, image_size)
            if resize == 'crop':
                image = ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)
            else:
                image = image.resize(size, Image.Resampling.LANCZOS)
    except Image.DecompressionBombError as e:
        return None, f'too large to decode safely ({e})'
    # PIL's decoders raise many exception types on malformed files; any of them means "bad".
    except Exception as e:  # noqa: BLE001
        return None, f'{type(e).__name__}: {e}'
    return np.asarray(image, np.uint8).reshape(image_size, image_size, channels), None


def is_grayscale(path: str) -> bool:
    """Whether the file holds a one-channel image (read from its header, or its palette);
    unreadable files count as grayscale, so they never decide the channels."""
    try:
        with Image.open(path) as image:
            if image.mode == 'P':
                rgb = np.asarray(image.getpalette() or [], np.int64).reshape(-1, 3)
                return bool((rgb == rgb[:, :1]).all())
            return image.mode in ('1', 'L', 'LA', 'F') or image.mode.startswith('I')
    except Exception:  # noqa: BLE001
        return True


def _short_hash(text: str) -> str:
    """Lowercase hex: safe in folder names on file systems that fold case."""
    return hashlib.sha256(text.encode()).hexdigest()[:10]


class FolderConfig(tfds.core.BuilderConfig):
    """Image size, channels, resize policy, split policies, seed, source folder and layout.

    The name encodes all of them: the settings in words, and everything the user named (the
    folder, a label file, split folders, column names) as a hash of hex digits, so different
    sources never share prepared data, also on file systems that fold case (where ``Train`` and
    ``train`` would be one folder name). ``channels=0`` is resolved from the data when prepared.
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
        test_fraction: float = 0.1,
        labels: str = '',
        splits: dict[str, str] | None = None,
        path_column: str = '',
        label_column: str = '',
        split_column: str = '',
    ):
        if channels not in (0, *_MODES):
            raise ValueError(f'channels must be 0 (auto), 1 or 3, not {channels!r}.')
        if resize not in _RESIZE_POLICIES:
            raise ValueError(f'resize must be one of {_RESIZE_POLICIES}, not {resize!r}.')
        for name, value in (('validation', validation_fraction), ('test', test_fraction)):
            if not 0 < value < 1:
                raise ValueError(f'{name}_fraction must be in (0, 1), not {value}.')
        if image_size < 1:
            raise ValueError(f'image_size must be positive, not {image_size}.')
        folder = str(pathlib.Path(folder).expanduser().resolve()) if folder else None
        if labels:
            labels = pathlib.Path(labels).expanduser()
            if not labels.is_absolute() and folder and not labels.exists():
                labels = pathlib.Path(folder) / labels
            labels = str(labels.resolve())
        self.splits = {s: d for s, d in (splits or {}).items() if d}
        self.columns = {
            k: v
            for k, v in (
                ('path_column', path_column),
                ('label_column', label_column),
                ('split_column', split_column),
            )
            if v
        }
        source = f'src{_short_hash(folder)}' if folder else 'manual'
        chosen = json.dumps([labels, self.splits, self.columns], sort_keys=True)
        layout = (
            f'_test{test_fraction:g}_lay{_short_hash(chosen)}'
            if labels or self.splits or (test_fraction != 0.1) or self.columns
            else ''
        )
        super().__init__(
            name=(
                f'{image_size}px_{channels or "auto"}ch_{resize}_val{validation_fraction:g}'
                f'-min{min_validation_per_class}_seed{seed}_{source}{layout}'
            ),
            description=f'{image_size}x{image_size} images ({resize}) from '
            f'{labels or folder or "the manual_dir"}.',
        )
        self.image_size = image_size
        self.channels = channels
        self.folder = folder
        self.resize = resize
        self.validation_fraction = validation_fraction
        self.min_validation_per_class = min_validation_per_class
        self.seed = seed
        self.test_fraction = test_fraction
        self.labels = labels


class ImageFolder(sharded.ShardedBuilder, skip_registration=True):
    """Any folder of images in a layout ``layouts.detect`` knows: scan, assign splits, decode
    on all cores, report bad files. Presets (Fruits360, ChestXray) fix the layout instead."""

    VERSION = tfds.core.Version('1.1.0')
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        '1.0.0': 'First release.',
        '1.1.0': 'Carving and record order follow class and file names, not the folders the '
        'files sit in, so any layout of the same files prepares the same splits.',
    }
    LAYOUT: Layout | None = None  # None: detected
    DESCRIPTION = 'Images from a local folder or label file, classes from their labels.'
    HOMEPAGE = ''
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        'Set config.dataset.folder to the folder that holds your images, in one of these '
        f'layouts: {layouts.KNOWN_LAYOUTS}'
    )

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
                        shape=(cfg.image_size, cfg.image_size, self._channels()),
                        dtype=np.uint8,
                        encoding=tfds.features.Encoding.BYTES,
                    ),
                    # Names come from the scan (set in _split_streams) or, once
                    # prepared, from the label file beside the data.
                    'label': tfds.features.ClassLabel(),
                }
            ),
            supervised_keys=('image', 'label'),
            homepage=self.HOMEPAGE,
            metadata=tfds.core.MetadataDict(),
        )

    def _channels(self) -> int:
        """The configured channels; for 0 (auto), those of the prepared data if prepared, else
        1 when every image is grayscale, else 3."""
        cfg = self.builder_config
        if cfg.channels:
            return cfg.channels
        features = self.data_path / 'features.json'
        if features.exists():
            prepared = tfds.features.FeatureConnector.from_config(str(self.data_path))
            return prepared['image'].shape[-1]
        return _auto_channels(cfg, self.LAYOUT)

    def _scan(self, dl_manager) -> FolderScan:
        source = self._source(dl_manager) if self.LAYOUT is not None else None
        return scan(self.builder_config, self.LAYOUT, source)

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
        }  # 'source', 'layout', 'validation' and 'ignored_files' come from _split_streams.
        super()._download_and_prepare(dl_manager, download_config)
        report = self._report
        report['seconds'] = round(time.perf_counter() - start, 2)
        metadata = self.info.metadata
        for key in ('source', 'layout', 'validation', 'splits'):
            metadata[key] = report[key]
        metadata['resize'] = self.builder_config.resize
        metadata['channels'] = self.info.features['image'].shape[-1]
        metadata['bad_files'] = len(report['bad_files'])
        metadata['ignored_files'] = len(report['ignored_files'])
        (self.data_path / REPORT_FILE).write_text(json.dumps(report, indent=2) + '\n')
        _print_prepared(self.name, report, self.info.features['label'].names)

    def _split_streams(self, dl_manager) -> dict[str, sharded.SplitStream]:
        cfg = self.builder_config
        try:
            scan = self._scan(dl_manager)
        except FileNotFoundError as e:
            how = textwrap.dedent(self.MANUAL_DOWNLOAD_INSTRUCTIONS)
            raise FileNotFoundError(f'{e}\n\nHow to get the data:\n{how}') from None
        self.info.features['label'].names = list(scan.class_names)
        splits, validation = assign_splits(
            scan,
            validation_fraction=cfg.validation_fraction,
            min_validation_per_class=cfg.min_validation_per_class,
            seed=cfg.seed,
            test_fraction=cfg.test_fraction,
        )
        self._report.update(
            source=str(scan.root),
            layout=scan.layout,
            validation=validation,
            ignored_files=scan.ignored,
        )
        return {
            split: (
                len(files),
                self._examples(split, _in_stored_order(files, split, scan.class_names)),
            )
            for split, files in splits.items()
        }

    def _examples(self, split: str, files: list[Sample]):
        """``(key, example)`` per file in order (``None`` for a bad file); the split's counts,
        bad files and, for train, pixel statistics are recorded once it has been written."""
        cfg = self.builder_config
        names = self.info.features['label'].names
        load = functools.partial(
            load_image,
            image_size=cfg.image_size,
            channels=self.info.features['image'].shape[-1],
            resize=cfg.resize,
        )
        per_class = np.zeros(len(names), np.int64)
        histogram = sharded.PixelHistogram(self.info.features['image'].shape[-1])
        bad, blank = [], 0
        for sample, (image, error) in zip(files, self.map(load, [f.path for f in files])):
            if error is not None:
                bad.append({'path': sample.path, 'split': split, 'error': error})
                yield sample.key, None
                continue
            per_class[sample.label] += 1
            blank += int(image.min() == image.max())
            if split == 'train':
                histogram.add(image)
            yield sample.key, {'image': image, 'label': sample.label}
        self._report['bad_files'] += bad
        self._report['splits'][split] = {
            'files': len(files),
            'examples': int(per_class.sum()),
            'bad_files': len(bad),
            'per_class': per_class.tolist(),
        }
        if split != 'validation' and not per_class.all():
            empty = [names[i] for i in np.flatnonzero(per_class == 0)]
            raise DatasetError(
                f'No readable image of class(es) {empty} in the {split} split of '
                f'{self._report["source"]}; bad files: {[b["path"] for b in bad]}.'
            )
        if split == 'train' and blank == per_class.sum():
            raise DatasetError(
                f'Every readable image of the train split of {self._report["source"]} is blank '
                f'(one flat color) at {cfg.image_size}px: nothing to learn from.'
            )
        if split == 'train':
            self.info.metadata['mean'], self.info.metadata['std'] = histogram.mean_std()


def _print_prepared(name: str, report: dict, class_names: list[str]) -> None:
    """The one summary printed when a dataset is prepared: classes in label order, split sizes,
    bad files."""
    counts = ', '.join(f'{s} {c["examples"]}' for s, c in report['splits'].items())
    classes = ', '.join(f'{i}={n!r}' for i, n in enumerate(class_names))
    print(
        f'{name}: prepared {counts} examples from {report["source"]} ({report["layout"]}) in '
        f'{report["seconds"]} s; bad files skipped: {len(report["bad_files"])}, non-image '
        f'entries ignored: {len(report["ignored_files"])}; validation: '
        f'{report["validation"]["policy"]}. Report: {REPORT_FILE} beside the data.\n'
        + textwrap.fill(
            f'{len(class_names)} classes (label=name): {classes}',
            width=100,
            subsequent_indent='  ',
        )
    )
    for bad in report['bad_files']:
        print(f'  bad file skipped ({bad["split"]}): {bad["path"]}: {bad["error"]}')


def scan(cfg: FolderConfig, layout: Layout | None, source: pathlib.Path | None) -> FolderScan:
    """The files of ``cfg``'s dataset: in ``layout`` under ``source`` (a preset), else in the
    layout detected under ``cfg.folder`` (or given by its label file)."""
    if layout is not None:
        return scan_folder(source, layout)
    if not cfg.folder and not cfg.labels:
        raise DatasetError(
            'dataset.folder (or dataset.labels) is required for dataset.name=image_folder.'
        )
    return layouts.detect(
        cfg.folder or pathlib.Path(cfg.labels).parent,
        labels=cfg.labels,
        splits=cfg.splits,
        columns=cfg.columns,
    )


_resolved_channels: dict[tuple[str, str], int] = {}


def _auto_channels(cfg: FolderConfig, layout: Layout | None) -> int:
    """1 when every image file of the dataset is grayscale, else 3 (once per process)."""
    if layout is not None and not cfg.folder:
        raise DatasetError('dataset.channels=0 (auto) needs dataset.folder.')
    key = (cfg.name, cfg.folder or cfg.labels)
    if key not in _resolved_channels:
        found = scan(cfg, layout, pathlib.Path(cfg.folder) if cfg.folder else None)
        paths = [s.path for samples in found.splits.values() for s in samples]
        _resolved_channels[key] = 1 if all(map(is_grayscale, paths)) else 3
    return _resolved_channels[key]


def _in_stored_order(files: list[Sample], split: str, class_names) -> list[Sample]:
    ids = [_file_id(f, class_names) for f in files]
    return [files[i] for i in sharded.stored_order(ids, split)]


class Fruits360(ImageFolder):
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


class ChestXray(ImageFolder):
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
