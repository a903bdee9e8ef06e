"""Deterministic renderer of synthetic "scanned hand-made character" images for the 52-class glyph set.

Classes (label = index into ``CLASS_NAMES``):

* 0-9: the digits ``'0'`` .. ``'9'``;
* 10-35: the capitals ``'A'`` .. ``'Z'``;
* 36-51: the 16 lower-case letters whose shape differs clearly from their capital, in alphabetical
  order: ``a b d e f g h i j k m n q r t y``.

Fonts (``font_paths()`` order; 28 faces, 11 families, all shipped by PyPI packages):

==================  ========  =========================  ==========================================
family              category  PyPI package               faces
==================  ========  =========================  ==========================================
DejaVu Sans         sans      matplotlib                 Regular, Bold, Oblique, BoldOblique
DejaVu Serif        serif     matplotlib                 Regular, Bold, Italic, BoldItalic
DejaVu Sans Mono    mono      matplotlib                 Regular, Bold, Oblique, BoldOblique
Crimson Text        serif     fontpkg-crimson-text       Regular, Bold, Italic, BoldItalic
IBM Plex Mono       mono      fontpkg-ibm-plex-mono      Regular, Bold, Italic, BoldItalic
Delius              sans      fontpkg-delius             Regular (rounded, hand-lettered look)
Kalam               hand      fontpkg-kalam              Regular, Bold, Light
Indie Flower        hand      fontpkg-indie-flower       Regular
Caveat              hand      fontpkg-caveat             variable font, default (Regular) instance
Shadows Into Light  hand      fontpkg-shadows-into-light Regular
Intuitive           hand      font-intuitive             Regular
==================  ========  =========================  ==========================================

Each sample picks a family uniformly, then a face of it uniformly, so hand-drawn families are
not outweighed by the four-face ones.

Rendering: every (face, character) pair is rasterised once per process at a reference size (its
ink bounding box ~80 px) and turned into a signed distance field (SDF). A sample then resamples
that SDF once onto the output grid through a random affine map (scale by the ink box, rotation,
shear, aspect, translation that keeps the glyph inside the frame) plus a smooth two-scale elastic
displacement, and thresholds it at a random, spatially varying offset: this thickens or thins the
strokes like a pen of varying width and pressure. Ink grain, paper texture, uneven lighting,
contrast, blur and sensor noise follow.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

CLASS_NAMES: tuple[str, ...] = tuple('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ') + tuple(
    'abdefghijkmnqrty'
)

_SPLIT_IDS = {'train': 0, 'validation': 1, 'test': 2}

# (family, category, Python package, PyPI requirement, file names), in font_paths() order.
_FAMILIES: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    (
        'DejaVu Sans',
        'sans',
        'matplotlib',
        'matplotlib',
        (
            'DejaVuSans.ttf',
            'DejaVuSans-Bold.ttf',
            'DejaVuSans-Oblique.ttf',
            'DejaVuSans-BoldOblique.ttf',
        ),
    ),
    (
        'DejaVu Serif',
        'serif',
        'matplotlib',
        'matplotlib',
        (
            'DejaVuSerif.ttf',
            'DejaVuSerif-Bold.ttf',
            'DejaVuSerif-Italic.ttf',
            'DejaVuSerif-BoldItalic.ttf',
        ),
    ),
    (
        'DejaVu Sans Mono',
        'mono',
        'matplotlib',
        'matplotlib',
        (
            'DejaVuSansMono.ttf',
            'DejaVuSansMono-Bold.ttf',
            'DejaVuSansMono-Oblique.ttf',
            'DejaVuSansMono-BoldOblique.ttf',
        ),
    ),
    (
        'Crimson Text',
        'serif',
        'fontpkg_crimson_text',
        'fontpkg-crimson-text',
        (
            'CrimsonText-Regular.ttf',
            'CrimsonText-Bold.ttf',
            'CrimsonText-Italic.ttf',
            'CrimsonText-BoldItalic.ttf',
        ),
    ),
    (
        'IBM Plex Mono',
        'mono',
        'fontpkg_ibm_plex_mono',
        'fontpkg-ibm-plex-mono',
        (
            'IBMPlexMono-Regular.ttf',
            'IBMPlexMono-Bold.ttf',
            'IBMPlexMono-Italic.ttf',
            'IBMPlexMono-BoldItalic.ttf',
        ),
    ),
    ('Delius', 'sans', 'fontpkg_delius', 'fontpkg-delius', ('Delius-Regular.ttf',)),
    (
        'Kalam',
        'hand',
        'fontpkg_kalam',
        'fontpkg-kalam',
        ('Kalam-Regular.ttf', 'Kalam-Bold.ttf', 'Kalam-Light.ttf'),
    ),
    (
        'Indie Flower',
        'hand',
        'fontpkg_indie_flower',
        'fontpkg-indie-flower',
        ('IndieFlower-Regular.ttf',),
    ),
    ('Caveat', 'hand', 'fontpkg_caveat', 'fontpkg-caveat', ('Caveat[wght].ttf',)),
    (
        'Shadows Into Light',
        'hand',
        'fontpkg_shadows_into_light',
        'fontpkg-shadows-into-light',
        ('ShadowsIntoLight.ttf',),
    ),
    ('Intuitive', 'hand', 'font_intuitive', 'font-intuitive', ('Intuitive.ttf',)),
)

# Face indices (into font_paths()) of each family.
_FAMILY_FACES: tuple[tuple[int, ...], ...] = tuple(
    tuple(range(start, start + len(files)))
    for start, files in zip(
        np.cumsum([0] + [len(f[4]) for f in _FAMILIES[:-1]]).tolist(), (f[4] for f in _FAMILIES)
    )
)

_REF_BOX = 80  # ink-box size (larger side, px) of the cached reference rasterisation
_REF_MARGIN = 24  # SDF padding around the ink box, px
_OUTSIDE = 1e3  # SDF value sampled outside the cached array


@dataclasses.dataclass(frozen=True)
class _Glyph:
    sdf: np.ndarray  # float32 signed distance (px, > 0 outside the ink), padded by _REF_MARGIN
    center: tuple[float, float]  # ink-box centre (row, col) in sdf pixel coordinates
    height: int  # ink-box size, px
    width: int
    half_stroke: float  # typical stroke half-width, px
    min_part: float  # half-width of the thinnest connected part (e.g. the dot of an i), px


def _font_dir(package: str, requirement: str) -> pathlib.Path:
    try:
        if package == 'matplotlib':
            import matplotlib

            return pathlib.Path(matplotlib.get_data_path()) / 'fonts' / 'ttf'
        return pathlib.Path(str(importlib.resources.files(package) / 'files'))
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f'glyph fonts: missing PyPI package {requirement!r} (pip install {requirement})'
        ) from e


@functools.cache
def _font_files() -> tuple[pathlib.Path, ...]:
    paths = []
    for family, _, package, requirement, files in _FAMILIES:
        directory = _font_dir(package, requirement)
        for name in files:
            path = directory / name
            if not path.is_file():
                raise FileNotFoundError(
                    f'glyph fonts: {family} face {path} missing; reinstall {requirement!r}'
                )
            paths.append(path)
    return tuple(paths)


def font_paths() -> list[pathlib.Path]:
    """Font files used for rendering, in the module docstring's order; a missing package's error names it."""
    return list(_font_files())


@functools.lru_cache(maxsize=None)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)


def _ink(path: str, char: str, size: int) -> np.ndarray:
    """Anti-aliased coverage (uint8) of `char`, cropped to its ink bounding box."""
    font = _font(path, size)
    left, top, right, bottom = font.getbbox(char)
    image = Image.new('L', (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(image).text((1 - left, 1 - top), char, font=font, fill=255)
    box = image.getbbox()
    if box is None:
        raise ValueError(f'font {path} renders no ink for {char!r}')
    return np.asarray(image.crop(box))


@functools.lru_cache(maxsize=None)
def _glyph(face: int, char: str) -> _Glyph:
    path = str(_font_files()[face])
    probe = _ink(path, char, 128)
    ink = _ink(path, char, max(8, round(128 * _REF_BOX / max(probe.shape))))
    inside = np.pad(ink >= 128, _REF_MARGIN)
    depth = ndimage.distance_transform_edt(inside)
    sdf = np.where(inside, 0.5 - depth, ndimage.distance_transform_edt(~inside) - 0.5)
    height, width = ink.shape
    parts, _ = ndimage.label(inside)
    part_depths = [
        depth[box][parts[box] == k].max() for k, box in enumerate(ndimage.find_objects(parts), 1)
    ]
    return _Glyph(
        sdf=sdf.astype(np.float32),
        center=(_REF_MARGIN + (height - 1) / 2, _REF_MARGIN + (width - 1) / 2),
        height=height,
        width=width,
        # Mean depth of a uniform stroke of half-width w is ~w/2 (+ 0.5 px pixel offset).
        half_stroke=max(1.0, 2.0 * (float(depth[inside].mean()) - 0.5)),
        min_part=max(1.0, float(np.min(part_depths)) - 0.5),
    )


@functools.lru_cache(maxsize=None)
def _basis(size: int, knots: int) -> np.ndarray:
    """[size, knots] Gaussian interpolation weights with unit-norm rows (field = B F B^T ~ N(0, 1))."""
    spacing = size / (knots - 1)
    centers = np.linspace(-0.5 * spacing, size - 1 + 0.5 * spacing, knots)
    weights = np.exp(-0.5 * ((np.arange(size)[:, None] - centers[None, :]) / spacing) ** 2)
    return weights / np.linalg.norm(weights, axis=1, keepdims=True)


def _field(rng: np.random.Generator, size: int, knots: int) -> np.ndarray:
    """Smooth random [size, size] field with standard-normal marginals."""
    basis = _basis(size, knots)
    return basis @ rng.standard_normal((knots, knots)) @ basis.T


@functools.lru_cache(maxsize=None)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    return rows, cols


def render_glyph(label: int, rng: np.random.Generator, image_size: int = 90) -> np.ndarray:
    """One uint8 grayscale image [image_size, image_size] of class `label`: dark ink on a light background."""
    n = image_size
    faces = _FAMILY_FACES[rng.integers(len(_FAMILY_FACES))]
    glyph = _glyph(faces[rng.integers(len(faces))], CLASS_NAMES[label])

    # Affine map glyph -> image (x right, y down): rotation . shear . aspect, scaled by the ink box.
    angle = np.deg2rad(np.clip(rng.normal(0.0, 5.0), -12.0, 12.0))
    shear = rng.uniform(-0.22, 0.22)
    aspect = np.exp(rng.uniform(-0.12, 0.12))
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    forward = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([aspect, 1 / aspect])
    margin = 0.07 * n  # room for elastic displacement and stroke thickening
    box = max(glyph.height, glyph.width)
    ref_per_px = box / (n * rng.uniform(0.58, 0.8))  # reference px per output px
    corners = (
        np.array([[-1, -1, 1, 1], [-1, 1, -1, 1]]) * np.array([[glyph.width], [glyph.height]]) / 2
    )
    extent = np.ptp(forward @ corners, axis=1) / ref_per_px  # (x, y) extent in output px
    ref_per_px *= max(1.0, extent.max() / (n - 2 * margin))
    extent = extent * min(1.0, (n - 2 * margin) / extent.max())
    shift = rng.uniform(-1, 1, 2) * (n - 2 * margin - extent) / 2
    center_x, center_y = (n - 1) / 2 + shift
    inverse = np.linalg.inv(forward) * ref_per_px

    # Sampling grid: output pixel + smooth elastic displacement -> glyph reference pixels.
    rows, cols = _grid(n)
    coarse, fine = rng.uniform(0, 0.03) * n, rng.uniform(0, 0.008) * n
    x = cols + coarse * _field(rng, n, 4) + fine * _field(rng, n, 8) - center_x
    y = rows + coarse * _field(rng, n, 4) + fine * _field(rng, n, 8) - center_y
    ref_rows = glyph.center[0] + inverse[1, 0] * x + inverse[1, 1] * y
    ref_cols = glyph.center[1] + inverse[0, 0] * x + inverse[0, 1] * y
    distance = ndimage.map_coordinates(glyph.sdf, [ref_rows, ref_cols], order=1, cval=_OUTSIDE)
    distance /= ref_per_px

    # Stroke width: thicker or thinner than the font's, varying along the stroke like pen pressure.
    # Thinning never takes more than 45% of the font's stroke or of its thinnest part, and that part
    # (e.g. the dot of an i) keeps a radius of at least 1.3 output px.
    font_half = glyph.half_stroke / ref_per_px
    half = np.clip(
        font_half * np.exp(rng.uniform(np.log(0.55), np.log(2.2))), max(1.0, 0.012 * n), 0.045 * n
    )
    thinnest = max(
        -0.45 * min(glyph.half_stroke, glyph.min_part), 1.3 * ref_per_px - glyph.min_part
    )
    thinnest /= ref_per_px
    offset = np.maximum(
        (half - font_half) + rng.uniform(0, 0.25) * half * _field(rng, n, 4), thinnest
    )
    edge = rng.uniform(0.7, 1.5)
    coverage = np.clip(0.5 - (distance - offset) / edge, 0.0, 1.0)
    coverage *= 1.0 - rng.uniform(0, 0.3) * np.clip(0.6 + 0.5 * _field(rng, n, 14), 0.0, 1.0)

    # Paper, lighting, ink, blur and sensor noise.
    paper = rng.uniform(175, 250)
    ink = rng.uniform(0, paper - 110)
    background = (
        paper + rng.uniform(0, 12) * _field(rng, n, 3) + rng.uniform(0, 6) * _field(rng, n, 20)
    )
    image = background - (background - ink) * coverage
    sigma = rng.uniform(0, 1.1)
    if sigma > 0.3:
        image = ndimage.gaussian_filter(image, sigma, truncate=2.5)
    image += rng.uniform(1, 9) * rng.standard_normal((n, n))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_sample(
    seed: int, split: str, index: int, image_size: int = 90
) -> tuple[np.ndarray, int]:
    """Deterministic sample `index` of a split: label index % 52, RNG seeded from (seed, split, index)."""
    if split not in _SPLIT_IDS:
        raise ValueError(f'unknown split {split!r}; expected one of {sorted(_SPLIT_IDS)}')
    label = index % len(CLASS_NAMES)
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    return render_glyph(label, rng, image_size), label
