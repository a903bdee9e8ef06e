"""Dataset selection by ``config.dataset.name``: prepare once, then read with ``tfds.data_source``."""

from __future__ import annotations

import dataclasses
import fcntl
import pathlib
import shutil
import time
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants

from flaxcnn import distributed
from flaxcnn.data import folders, glyphs

SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Random-access splits plus what training needs to know about them."""

    splits: Mapping[str, Sequence[dict[str, Any]]]  # 'train', 'validation', 'test'
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (height, width, channels)
    mean: tuple[float, ...]  # per channel, of the train split's pixels (0..255)
    std: tuple[float, ...]
    prepare_seconds: float  # time spent generating/preparing (0 when cached)
    # Examples per class of each split, as recorded when prepared ({} if not: see count_classes)
    class_counts: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)


def _make(builder_cls, config: tfds.core.BuilderConfig, data_dir: str):
    if config.name in builder_cls.builder_configs:  # TFDS wants registered ones by name.
        config = config.name
    return builder_cls(data_dir=data_dir, file_format='array_record', config=config)


def _glyphs_builder(cfg: ml_collections.ConfigDict, data_dir: str):
    config = glyphs.GlyphsConfig(
        image_size=cfg.image_size,
        train_per_class=cfg.train_per_class,
        validation_per_class=cfg.validation_per_class,
        test_per_class=cfg.test_per_class,
        seed=cfg.seed,
        classes=cfg.get('classes', ''),
    )
    return _make(glyphs.Glyphs, config, data_dir)


def _folder_builder(builder_cls):
    def make(cfg: ml_collections.ConfigDict, data_dir: str):
        fields = {k: cfg[k] for k in folders.CONFIG_FIELDS if k in cfg}
        if 'splits' in fields:
            fields['splits'] = dict(fields['splits'])
        config = folders.FolderConfig(**fields)
        return _make(builder_cls, config, data_dir)

    return make


_BUILDERS = {
    'glyphs': _glyphs_builder,
    'image_folder': _folder_builder(folders.ImageFolder),
    'fruits360': _folder_builder(folders.Fruits360),
    'chest_xray': _folder_builder(folders.ChestXray),
}


def dataset_names() -> list[str]:
    """Names accepted by ``config.dataset.name``."""
    return sorted(_BUILDERS)


def builder(cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The TFDS builder described by ``config.dataset``."""
    if cfg.name not in _BUILDERS:
        raise ValueError(f'Unknown dataset.name {cfg.name!r}; expected one of {sorted(_BUILDERS)}.')
    data_dir = str(pathlib.Path(cfg.data_dir).expanduser())
    return _BUILDERS[cfg.name](cfg, data_dir)


def prepare(b: tfds.core.DatasetBuilder) -> None:
    """Prepares ``b`` unless done, one process at a time per dataset config.

    TFDS writes into an ``incomplete.*`` folder and renames it when done, so a killed
    preparation is never read as complete; its folder is left behind. Under the lock no other
    preparation is running, so any such folder is a dead one's and is removed first.
    """
    config_dir = pathlib.Path(b.data_path).parent
    config_dir.mkdir(parents=True, exist_ok=True)
    with open(config_dir / '.prepare.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
        if b.is_prepared():  # by the process we waited for
            return
        for leftover in config_dir.glob(f'{constants.INCOMPLETE_PREFIX}*'):
            shutil.rmtree(leftover)
        older = sorted(
            str(p)
            for p in config_dir.iterdir()
            if p.is_dir() and tfds.core.Version.is_valid(p.name)
        )
        if older:
            print(
                f'{b.name}: preparing version {b.version}; earlier versions are no longer read '
                f'and may be deleted: {", ".join(older)}'
            )
        b.download_and_prepare()


def load(cfg: ml_collections.ConfigDict) -> Dataset:
    """Prepares ``config.dataset`` if it is not on disk yet and opens its splits."""
    start = time.perf_counter()
    b = builder(cfg)
    prepared = b.is_prepared()
    if distributed.is_primary() and not prepared:
        prepare(b)
    distributed.barrier('flaxcnn.datasets.load')  # the others wait for process 0,
    b = builder(cfg)  # (a builder reads the dataset's info when it is made)
    if not b.is_prepared():  # then prepare their own copy if they do not share its disk.
        prepare(b)
    prepare_seconds = 0.0 if prepared else time.perf_counter() - start
    sources = b.as_data_source()
    missing = [s for s in SPLITS if s not in sources]
    if missing:
        raise ValueError(f'Dataset {b.name!r} at {b.data_dir} has no split(s) {missing}.')
    features = b.info.features
    return Dataset(
        splits={s: sources[s] for s in SPLITS},
        class_names=tuple(features['label'].names),
        image_shape=tuple(features['image'].shape),
        mean=tuple(b.info.metadata['mean']),
        std=tuple(b.info.metadata['std']),
        prepare_seconds=prepare_seconds,
        class_counts={
            s: tuple(c['per_class'])
            for s, c in b.info.metadata.get('splits', {}).items()
            if 'per_class' in c
        },
    )


def labels_of(source: Sequence[dict[str, Any]]) -> np.ndarray:
    """The label of every example of a split, in order (one pass over its records)."""
    return np.fromiter((source[i]['label'] for i in range(len(source))), np.int64, len(source))


def count_classes(dataset: Dataset, split: str) -> tuple[int, ...]:
    """Examples per class of ``split``: as recorded, or counted (glyphs; folders prepared
    before the counts were recorded)."""
    if split in dataset.class_counts:
        return tuple(dataset.class_counts[split])
    labels = labels_of(dataset.splits[split])
    return tuple(np.bincount(labels, minlength=len(dataset.class_names)).tolist())
