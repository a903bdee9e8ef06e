"""The training recipe's on-device pieces: random translations, mixup/cutmix and shifted views.

Pure ``jnp`` functions of a batch and a key, used inside the compiled steps (``steps.py``);
``Recipe`` gathers the config fields that switch them on, read here and nowhere else.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The recipe options of a run; each is off at its default."""

    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    random_crop_pad: int = 0
    ema_decay: float = 0.0
    tta: int = 0

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> Recipe:
        """The options of ``config``; a config saved before a field existed has it off."""
        fields = {
            'label_smoothing': ('loss', 'label_smoothing'),
            'mixup_alpha': ('input', 'mixup_alpha'),
            'cutmix_alpha': ('input', 'cutmix_alpha'),
            'random_crop_pad': ('input', 'random_crop_pad'),
            'ema_decay': ('ema', 'decay'),
            'tta': ('eval', 'tta'),
        }
        return cls(
            **{
                name: config.get(section, {}).get(field, getattr(cls, name))
                for name, (section, field) in fields.items()
            }
        )


OFF = Recipe()  # every option off: the plain step


def pad_edges(images: jax.Array, pad: int) -> jax.Array:
    """NHWC images with ``pad`` pixels added on each side, repeating the border pixels (as the
    rotation fills with the border's colour, so glyphs keep a plain background)."""
    return jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='edge')


def random_crop(key: jax.Array, images: jax.Array, pad: int) -> jax.Array:
    """Each image translated by a uniform offset in [-pad, pad] pixels on each axis (padded by
    ``pad`` then cropped back to its size at a random place, the CIFAR recipe)."""
    n, height, width, channels = images.shape
    corners = jax.random.randint(key, (n, 2), 0, 2 * pad + 1)
    padded = pad_edges(images, pad)

    def crop(image, corner):
        return jax.lax.dynamic_slice(image, (corner[0], corner[1], 0), (height, width, channels))

    return jax.vmap(crop)(padded, corners)


def shifted_views(images: jax.Array, shift: int) -> list[jax.Array]:
    """The images and their copies moved by ``shift`` pixels up, down, left and right."""
    _, height, width, _ = images.shape
    padded = pad_edges(images, shift)
    corners = [(shift, shift), (0, shift), (2 * shift, shift), (shift, 0), (shift, 2 * shift)]
    return [padded[:, top : top + height, left : left + width] for top, left in corners]


def mix(
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    *,
    mixup_alpha: float,
    cutmix_alpha: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(mixed float images, partner labels, weight of the own labels) of a batch mixed with its
    reverse; ``mixed_targets`` turns them into the soft targets.

    Mixup blends whole images with a Beta(alpha, alpha) weight; cutmix pastes a box of the
    partner image whose area share is drawn the same way, and the weight is the share of the
    own pixels left. With both on, each batch uses one of them with probability 1/2.
    """
    key_choice, key_mixup, key_cutmix = jax.random.split(key, 3)
    partner_images = images[::-1]
    if mixup_alpha:
        weight = jax.random.beta(key_mixup, mixup_alpha, mixup_alpha)
        mixed_up = weight * images + (1.0 - weight) * partner_images, weight
    if cutmix_alpha:
        inside = _random_box(key_cutmix, images.shape[1:3], cutmix_alpha)[None, :, :, None]
        cut = jnp.where(inside, partner_images, images), 1.0 - jnp.mean(inside)
    if mixup_alpha and cutmix_alpha:
        use_cutmix = jax.random.bernoulli(key_choice)
        mixed, weight = jax.tree.map(lambda c, m: jnp.where(use_cutmix, c, m), cut, mixed_up)
    else:
        mixed, weight = mixed_up if mixup_alpha else cut
    return mixed, labels[::-1], weight


def mixed_targets(
    labels: jax.Array, partner_labels: jax.Array, weight: jax.Array, num_classes: int
) -> jax.Array:
    """Soft targets [batch, classes]: ``weight`` on each label, the rest on its partner's."""
    own = jax.nn.one_hot(labels, num_classes)
    return weight * own + (1.0 - weight) * jax.nn.one_hot(partner_labels, num_classes)


def _random_box(key: jax.Array, size: tuple[int, int], alpha: float) -> jax.Array:
    """A boolean [height, width] mask of a box covering about 1 - Beta(alpha, alpha) of the
    image, centred at a uniform pixel and clipped at the edges (the cutmix paper's box)."""
    height, width = size
    key_share, key_y, key_x = jax.random.split(key, 3)
    side = jnp.sqrt(1.0 - jax.random.beta(key_share, alpha, alpha))
    centre_y = jax.random.randint(key_y, (), 0, height)
    centre_x = jax.random.randint(key_x, (), 0, width)
    half_h, half_w = side * height / 2, side * width / 2
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    return (
        (rows >= jnp.round(centre_y - half_h))
        & (rows < jnp.round(centre_y + half_h))
        & (cols >= jnp.round(centre_x - half_w))
        & (cols < jnp.round(centre_x + half_w))
    )
