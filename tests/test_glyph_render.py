"""Tests of the synthetic glyph renderer: classes, fonts, determinism and image properties."""

import hashlib
import pathlib
import string
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFont

from flaxcnn.data import glyph_render
from flaxcnn.data.glyph_render import CLASS_NAMES, font_paths, render_glyph, render_sample

HAND_FAMILIES = {'Kalam', 'Indie Flower', 'Caveat', 'Shadows Into Light', 'Intuitive'}


def _mask(font: ImageFont.FreeTypeFont, char: str) -> Image.Image:
    core = font.getmask(char)
    return Image.frombytes('L', core.size, bytes(core))


def test_class_names_order():
    assert len(CLASS_NAMES) == 52
    assert len(set(CLASS_NAMES)) == 52
    assert CLASS_NAMES == tuple(string.digits + string.ascii_uppercase + 'abdefghijkmnqrty')


def test_font_paths_faces_and_families():
    paths = font_paths()
    assert all(p.is_file() for p in paths)
    names = [ImageFont.truetype(str(p), 12).getname() for p in paths]
    families = {family for family, _ in names}
    assert len(paths) >= 24
    assert len(set(names)) == len(paths), 'a face is listed twice'
    assert len(families) >= 8
    assert len(families & HAND_FAMILIES) >= 2, families
    assert paths == font_paths(), 'order must be fixed'


@pytest.mark.parametrize('path', font_paths(), ids=lambda p: p.name)
def test_every_font_renders_every_class(path):
    font = ImageFont.truetype(str(path), 24)
    notdef = _mask(font, '\U0010fffd')
    for char in CLASS_NAMES:
        mask = _mask(font, char)
        assert mask.getbbox() is not None and np.asarray(mask).max() >= 128, (
            f'{char!r} renders blank'
        )
        assert mask.size != notdef.size or mask.tobytes() != notdef.tobytes(), (
            f'{char!r} is the .notdef box'
        )


@pytest.mark.parametrize('path', font_paths(), ids=lambda p: p.name)
def test_lower_case_is_not_small_caps(path):
    font = ImageFont.truetype(str(path), 32)

    def shape(char):
        mask = _mask(font, char)
        return np.asarray(mask.crop(mask.getbbox()).resize((20, 20), Image.BILINEAR)) >= 128

    ious = []
    for lower in CLASS_NAMES[36:]:
        a, b = shape(lower), shape(lower.upper())
        ious.append((a & b).sum() / (a | b).sum())
    # Real lower case scores <= 0.6 here, a caps-only font such as Permanent Marker ~0.9.
    assert np.mean(ious) < 0.75


def test_render_sample_deterministic_shape_and_label():
    for index in (0, 51, 52, 1001):
        image, label = render_sample(3, 'train', index)
        assert image.dtype == np.uint8 and image.shape == (90, 90)
        assert label == index % 52
        again, _ = render_sample(3, 'train', index)
        assert image.tobytes() == again.tobytes()
    base = render_sample(3, 'train', 5)[0]
    assert not np.array_equal(base, render_sample(3, 'train', 57)[0])  # same class, other index
    assert not np.array_equal(base, render_sample(3, 'validation', 5)[0])
    assert not np.array_equal(base, render_sample(4, 'train', 5)[0])
    assert render_sample(3, 'test', 7, image_size=48)[0].shape == (48, 48)
    with pytest.raises(ValueError, match='split'):
        render_sample(3, 'dev', 0)


def test_render_sample_identical_in_another_process_and_order():
    indices = list(range(0, 520, 37))
    here = [
        hashlib.sha256(render_sample(11, 'validation', i)[0].tobytes()).hexdigest() for i in indices
    ]
    code = (
        'import hashlib\n'
        'from flaxcnn.data.glyph_render import render_sample\n'
        f'for i in {indices[::-1]}:\n'
        "    print(hashlib.sha256(render_sample(11, 'validation', i)[0].tobytes()).hexdigest())\n"
    )
    repo = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, '-c', code], cwd=repo, capture_output=True, text=True, check=True
    )
    out = result.stdout
    assert out.split()[::-1] == here


def test_images_vary_and_have_ink_on_light_background():
    near_border = 0.0
    for label in range(0, 52, 3):
        images = [render_glyph(label, np.random.default_rng([label, k])) for k in range(3)]
        assert not np.array_equal(images[0], images[1])
        for image in images:
            values = image.astype(np.float64)
            background = np.median(values)
            assert background >= 140, 'background must be light'
            assert background - np.percentile(values, 0.5) >= 60, 'ink must be clearly darker'
            ink = values < background - 0.5 * (background - np.percentile(values, 0.5))
            frame = np.ones_like(ink)
            frame[2:-2, 2:-2] = False
            near_border = max(near_border, (ink & frame).sum() / ink.sum())
    assert near_border < 0.05, 'glyphs must stay (almost) inside the frame'


def test_glyph_is_centred_and_scaled_by_ink_box():
    # A short, wide glyph ('m') and a tall, thin one ('1') fill comparable boxes around the centre.
    spans = []
    for char in 'm1':
        label = CLASS_NAMES.index(char)
        rows, cols = [], []
        for k in range(20):
            image = render_glyph(label, np.random.default_rng([99, k])).astype(np.float64)
            background, dark = np.median(image), np.percentile(image, 0.5)
            ys, xs = np.nonzero(image < background - 0.5 * (background - dark))
            rows.append(ys.mean())
            cols.append(xs.mean())
            spans.append(max(np.ptp(ys), np.ptp(xs)) / image.shape[0])
        assert abs(np.mean(rows) - 44.5) < 8 and abs(np.mean(cols) - 44.5) < 8
    assert 0.45 < min(spans) and max(spans) < 0.97


def test_missing_font_package_is_named(monkeypatch):
    missing = ('Nope', 'hand', 'no_such_pkg', 'no-such-pkg', ('x.ttf',))
    monkeypatch.setattr(glyph_render, '_FAMILIES', glyph_render._FAMILIES + (missing,))
    glyph_render._font_files.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match='no-such-pkg'):
            font_paths()
    finally:
        monkeypatch.undo()
        glyph_render._font_files.cache_clear()
