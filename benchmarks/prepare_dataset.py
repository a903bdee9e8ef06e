"""Preparing an image folder: images/s and peak memory for folders of N synthetic images.

For each N, generates (on all cores) a Fruits-360-style folder of N 100x100 RGB JPEGs in
``--classes`` classes (``Training/`` and ``Test/``, 5:1), prepares it with
``datasets.load`` in a fresh process (``fruits360``, 100 px, 3 channels: what
``configs/fruits_cnn.py`` does) and prints N, images/s, the peak resident memory of the
preparing process and of it plus its worker processes (sampled), and the seconds; then
projects the time for ImageNet's 1.28 M training images from the largest N's rate (at 100 px;
ImageNet's larger JPEGs decode slower). Folders and prepared data live under ``--root`` and are
deleted afterwards unless ``--keep``.

Commands (from the repository root)::

    .venv/bin/python benchmarks/prepare_dataset.py --n 20000
    .venv/bin/python benchmarks/prepare_dataset.py --n 20000 200000 --root /tmp/prepare_bench
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import psutil
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
IMAGENET_TRAIN = 1_281_167
_PREPARE = """\
import json, sys
import ml_collections
from flaxcnn.data import datasets
datasets.load(ml_collections.ConfigDict(json.loads(sys.argv[1])))
"""


def _write_images(paths: list[str], seed: int) -> None:
    """Smooth random colour fields plus noise: JPEGs of a realistic size and decoding cost."""
    rng = np.random.default_rng(seed)
    for path in paths:
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), np.uint8))
        image = np.asarray(coarse.resize((100, 100), Image.Resampling.BICUBIC), np.int16)
        image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(path, quality=90)


def make_folder(root: pathlib.Path, n: int, classes: int) -> None:
    """``n`` JPEGs under ``root/{Training,Test}/class_XX/``, written by all cores."""
    paths = []
    for i in range(n):
        split = 'Test' if (i // classes) % 6 == 5 else 'Training'
        paths.append(str(root / split / f'class_{i % classes:02d}' / f'{i}.jpg'))
    for folder in {os.path.dirname(p) for p in paths}:
        os.makedirs(folder, exist_ok=True)
    chunk = 2000
    with concurrent.futures.ProcessPoolExecutor() as pool:
        futures = [pool.submit(_write_images, paths[i : i + chunk], i) for i in range(0, n, chunk)]
        for future in futures:
            future.result()


def _tree_rss(process: psutil.Process) -> tuple[int, int]:
    """Resident bytes of ``process`` and of it plus its descendants."""
    try:
        own = process.memory_info().rss
        children = process.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    total = own
    for child in children:
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return own, total


def prepare(folder: pathlib.Path, data_dir: pathlib.Path) -> dict:
    """Prepares ``folder`` in a fresh process; its seconds and sampled peak memory."""
    config = {
        'name': 'fruits360',
        'data_dir': str(data_dir),
        'folder': str(folder),
        'image_size': 100,
        'channels': 3,
        'validation_fraction': 0.1,
        'seed': 0,
    }
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, '-c', _PREPARE, json.dumps(config)],
        cwd=REPO,
        env={**os.environ, 'PYTHONPATH': str(REPO)},
        stdout=subprocess.DEVNULL,
    )
    process = psutil.Process(child.pid)
    peak_own = peak_total = 0
    while child.poll() is None:
        own, total = _tree_rss(process)
        peak_own, peak_total = max(peak_own, own), max(peak_total, total)
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    if child.returncode:
        raise RuntimeError(f'preparing {folder} failed with exit code {child.returncode}')
    return {
        'seconds': seconds,
        'peak_rss_mb': peak_own / 2**20,
        'peak_tree_rss_mb': peak_total / 2**20,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, nargs='+', default=[20_000])
    parser.add_argument('--classes', type=int, default=20)
    parser.add_argument('--root', type=pathlib.Path, default=pathlib.Path('/tmp/prepare_bench'))
    parser.add_argument('--keep', action='store_true', help='keep the folders and prepared data')
    parser.add_argument('--json', action='store_true', help='also print the rows as JSON')
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    print(
        f'{datetime.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, load average '
        f'{load:.1f} at start (a shared machine: rates are indicative)'
    )
    print(
        f'{"N":>9} {"gen s":>7} {"images/s":>9} {"peak RSS MB":>12} {"+workers MB":>12} {"seconds":>8}'
    )
    rows = []
    for n in args.n:
        root = args.root / f'n{n}'
        shutil.rmtree(root, ignore_errors=True)
        start = time.perf_counter()
        make_folder(root / 'folder', n, args.classes)
        generated = time.perf_counter() - start
        try:
            row = {'n': n, 'generate_seconds': generated, **prepare(root / 'folder', root / 'data')}
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        row['images_per_s'] = n / row['seconds']
        rows.append(row)
        print(
            f'{n:>9} {generated:>7.0f} {row["images_per_s"]:>9.0f} {row["peak_rss_mb"]:>12.0f} '
            f'{row["peak_tree_rss_mb"]:>12.0f} {row["seconds"]:>8.0f}'
        )
    rate = rows[-1]['images_per_s']
    print(
        f'ImageNet train ({IMAGENET_TRAIN:,} images) at {rate:.0f} images/s: '
        f'{IMAGENET_TRAIN / rate / 3600:.1f} h'
    )
    if args.json:
        print(json.dumps(rows))


if __name__ == '__main__':
    main()
