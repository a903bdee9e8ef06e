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
