"""Per-example random augmentations (grain ``RandomMapTransform``s on uint8 HWC images)."""

from __future__ import annotations

import dataclasses

import grain
import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class RandomRotation(grain.transforms.RandomMap):
    """Rotates by a uniform angle in [-degrees, degrees], filling with the border's median."""

    degrees: float

    def random_map(self, element, rng: np.random.Generator):
        angle = rng.uniform(-self.degrees, self.degrees)
        image = element['image']
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        fill = tuple(int(v) for v in np.median(border, axis=0))
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        rotated = np.asarray(
            pil.rotate(
                angle, resample=Image.BILINEAR, fillcolor=fill[0] if len(fill) == 1 else fill
            )
        )
        return {**element, 'image': rotated.reshape(image.shape)}


@dataclasses.dataclass(frozen=True)
class RandomFlip(grain.transforms.RandomMap):
    """Mirrors left-right with probability 1/2 (never for glyphs or chest X-rays)."""

    def random_map(self, element, rng: np.random.Generator):
        if rng.random() < 0.5:
            return {**element, 'image': element['image'][:, ::-1]}
        return element


@dataclasses.dataclass(frozen=True)
class CenterCrop(grain.transforms.Map):
    """Keeps the central ``size`` x ``size`` pixels."""

    size: int

    def map(self, element):
        image = element['image']
        top = (image.shape[0] - self.size) // 2
        left = (image.shape[1] - self.size) // 2
        return {**element, 'image': image[top : top + self.size, left : left + self.size]}
