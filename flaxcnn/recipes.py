"""The training recipe's on-device pieces: augmentation, mixup/cutmix and shifted views.

Pure ``jnp`` functions of a batch and a key, used inside the compiled steps (``steps.py``);
``Recipe`` gathers the config fields that switch them on, read here and nowhere else. The
augmentation runs here rather than in the input pipeline so that the pipeline is an index
lookup (``data/in_memory.py``), its random draws follow the step's key (a resumed run repeats
them exactly), and its cost is the step's own instead of worker processes' cores
(``docs/performance-notes.md`` has the measured trade).
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
    rotation_degrees: float = 0.0
    random_scale: float = 0.0
    flip: bool = False
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
            'rotation_degrees': ('input', 'rotation_degrees'),
            'random_scale': ('input', 'random_scale'),
            'flip': ('input', 'flip'),
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


def augment(key: jax.Array, images: jax.Array, recipe: Recipe) -> jax.Array:
    """A training batch's random rotations and scalings, translations and mirrorings, as
    ``recipe`` asks (uint8 in; float32 out once resampled)."""
    affine_key, crop_key, flip_key = jax.random.split(key, 3)
    if recipe.rotation_degrees or recipe.random_scale:
        images = random_affine(affine_key, images, recipe.rotation_degrees, recipe.random_scale)
    if recipe.random_crop_pad:
        images = random_crop(crop_key, images, recipe.random_crop_pad)
    if recipe.flip:
        images = random_flip(flip_key, images)
    return images


def random_affine(key: jax.Array, images: jax.Array, degrees: float, scale: float) -> jax.Array:
    """Each image rotated by a uniform angle in [-degrees, degrees] and scaled by a uniform
    factor in [1 - scale, 1 + scale] about its centre, resampled bilinearly; pixels from outside
    repeat the nearest border pixel (a plain background stays plain)."""
    n, height, width, channels = images.shape
    draws = per_image(key, n, lambda k: jax.random.uniform(k, (2, 1, 1), minval=-1.0, maxval=1.0))
    angle, zoom = jnp.deg2rad(degrees * draws[:, 0]), 1.0 + scale * draws[:, 1]
    # Output pixel -> source point: the inverse rotation and scaling, about the centre.
    y, x = jnp.meshgrid(
        jnp.arange(height) - (height - 1) / 2, jnp.arange(width) - (width - 1) / 2, indexing='ij'
    )
    cos, sin = jnp.cos(angle) / zoom, jnp.sin(angle) / zoom
    source_y = cos * y + sin * x + (height - 1) / 2
    source_x = cos * x - sin * y + (width - 1) / 2
    top, left = jnp.floor(source_y), jnp.floor(source_x)
    below, right = (source_y - top)[..., None], (source_x - left)[..., None]
    flat = images.reshape(n, height * width, channels).astype(jnp.float32)

    def pixels(rows, cols):  # [n, height, width, channels] at integer points, edges repeated
        rows = jnp.clip(rows, 0, height - 1).astype(jnp.int32)
        cols = jnp.clip(cols, 0, width - 1).astype(jnp.int32)
        index = (rows * width + cols).reshape(n, height * width, 1)
        return jnp.take_along_axis(flat, index, axis=1).reshape(n, height, width, channels)

    upper = (1 - right) * pixels(top, left) + right * pixels(top, left + 1)
    lower = (1 - right) * pixels(top + 1, left) + right * pixels(top + 1, left + 1)
    return (1 - below) * upper + below * lower


def per_image(key: jax.Array, n: int, draw) -> jax.Array:
    """``draw(k)`` for each of ``n`` images, ``k`` the key folded with the image's index: a row's
    draw depends on its index alone, however the batch is split over devices."""
    return jax.vmap(lambda i: draw(jax.random.fold_in(key, i)))(jnp.arange(n))


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Each image mirrored left-right with probability 1/2."""
    mirrored = per_image(key, images.shape[0], lambda k: jax.random.bernoulli(k, 0.5, (1, 1, 1)))
    return jnp.where(mirrored, images[:, :, ::-1], images)


def pad_edges(images: jax.Array, pad: int) -> jax.Array:
    """NHWC images with ``pad`` pixels added on each side, repeating the border pixels (as
    ``random_affine`` does, so glyphs keep a plain background)."""
    return jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='edge')


def random_crop(key: jax.Array, images: jax.Array, pad: int) -> jax.Array:
    """Each image translated by a uniform offset in [-pad, pad] pixels on each axis (padded by
    ``pad`` then cropped back to its size at a random place, the CIFAR recipe)."""
    n, height, width, channels = images.shape
    corners = per_image(key, n, lambda k: jax.random.randint(k, (2,), 0, 2 * pad + 1))
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
