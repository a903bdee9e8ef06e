"""TFDS builder for the embedded glyph dataset, rendered locally (never downloaded).

52 classes (see ``glyph_render.CLASS_NAMES``), uint8 grayscale images, splits
train / validation / test. Rendering runs on all CPU cores and the records are written in
``sharded.stored_order`` of their indices; every sample is a pure function of (seed, split,
index), so the files are identical whatever the number of workers. The train split's pixel mean and std are
counted while it is written and stored in the dataset's metadata, beside the data.

``classes`` keeps some of the classes (``CLASS_GROUPS`` joined by '+', e.g. 'digits+capitals'),
labelled 0.. in their order: sample ``i`` of a subset is the full set's sample of the same
class and rank, so a subset and the full set (or two subsets) hold the very same images, the
first N of each class, for transfer experiments.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from flaxcnn.data import glyph_render, sharded

_DESCRIPTION = (
    'Synthetic scanned-looking hand-made characters: digits, capitals and 16 lower-case '
    'letters whose shapes differ from their capitals, rendered from PyPI font packages.'
)


CLASS_GROUPS = {
    'digits': '0123456789',
    'capitals': 'ABCDEFGHIJKLMNOPQRSTUVWXYZ',
    'lowercase': 'abdefghijkmnqrty',
}


def class_labels(classes: str) -> tuple[int, ...]:
    """Labels (indices into ``CLASS_NAMES``) of a ``classes`` spec; '' = all."""
    if not classes:
        return tuple(range(len(glyph_render.CLASS_NAMES)))
    groups = classes.split('+')
    unknown = [g for g in groups if g not in CLASS_GROUPS]
    if unknown or len(set(groups)) != len(groups):
        raise ValueError(
            f"dataset.classes={classes!r}: expected '' (all) or distinct groups joined by '+', "
            f'from {", ".join(CLASS_GROUPS)}.'
        )
    chars = ''.join(CLASS_GROUPS[g] for g in groups)
    return tuple(glyph_render.CLASS_NAMES.index(c) for c in chars)


class GlyphsConfig(tfds.core.BuilderConfig):
    """Image size, split sizes (per class), seed and classes; the name encodes all five."""

    def __init__(
        self,
        *,
        image_size: int = 90,
        train_per_class: int = 600,
        validation_per_class: int = 150,
        test_per_class: int = 150,
        seed: int = 0,
        classes: str = '',
    ):
        super().__init__(
            name=(
                f'{image_size}px_{train_per_class}-{validation_per_class}-'
                f'{test_per_class}_seed{seed}' + (f'_{classes}' if classes else '')
            ),
            description=f'{image_size}x{image_size} images, per class: '
            f'{train_per_class} train, {validation_per_class} validation, '
            f'{test_per_class} test.',
        )
        self.image_size = image_size
        self.per_class = {
            'train': train_per_class,
            'validation': validation_per_class,
            'test': test_per_class,
        }
        self.seed = seed
        self.labels = class_labels(classes)


def _render(index: int, *, seed: int, split: str, image_size: int, labels: tuple[int, ...]):
    """Sample ``index`` of the subset ``labels``: the full set's sample of that class and rank."""
    rank, position = divmod(index, len(labels))
    full_index = rank * len(glyph_render.CLASS_NAMES) + labels[position]
    image, _ = glyph_render.render_sample(seed, split, full_index, image_size)
    return image, position


class Glyphs(sharded.ShardedBuilder):
    """The 52-class glyph dataset, or some of its classes."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        '1.0.0': 'First release.',
    }
    BUILDER_CONFIGS: ClassVar[list[GlyphsConfig]] = [GlyphsConfig()]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    'image': tfds.features.Tensor(shape=(size, size, 1), dtype=np.uint8),
                    'label': tfds.features.ClassLabel(
                        names=[glyph_render.CLASS_NAMES[i] for i in self.builder_config.labels]
                    ),
                }
            ),
            supervised_keys=('image', 'label'),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_streams(self, dl_manager) -> dict[str, sharded.SplitStream]:
        del dl_manager  # Nothing to download.
        sizes = {
            split: n * len(self.builder_config.labels)
            for split, n in self.builder_config.per_class.items()
        }
        return {split: (n, self._examples(split, n)) for split, n in sizes.items()}

    def _examples(self, split: str, num_examples: int):
        cfg = self.builder_config
        render = functools.partial(
            _render, seed=cfg.seed, split=split, image_size=cfg.image_size, labels=cfg.labels
        )
        histogram = sharded.PixelHistogram(channels=1)
        indices = sharded.stored_order(range(num_examples), split)
        for index, (image, label) in zip(indices, self.map(render, indices)):
            image = image[..., None]
            if split == 'train':
                histogram.add(image)
            yield index, {'image': image, 'label': label}
        if split == 'train':
            self.info.metadata['mean'], self.info.metadata['std'] = histogram.mean_std()
