"""Preparing datasets of any size: no TensorFlow, several shards, every image once, in order,
and a killed preparation never read as complete."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from flaxcnn.config import from_file
from flaxcnn.data import datasets, folders, sharded

REPO = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ('cherry', 'apple', 'banana')

# Imported at start-up by every Python process (the workers too) with this folder on its path:
# TensorFlow looks uninstalled (find_spec gives None, import fails), even where it is installed.
_NO_TENSORFLOW = """\
import sys

class _WithoutTensorFlow:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'tensorflow':
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self._finder, name)

sys.meta_path[:] = [_WithoutTensorFlow(finder) for finder in sys.meta_path]
"""

# Prepares each [config, shard bytes, fewest items for workers] job of argv[1] (JSON) with the
# shuffler's memory limit at 1 byte, so that TFDS's shuffler, if it were used, would spill to
# disk through TensorFlow at once.
_PREPARE = """\
import json, sys
import ml_collections
from tensorflow_datasets.core import shuffle
from flaxcnn.data import datasets, sharded
shuffle.MAX_MEM_BUFFER_SIZE = 1
for config, shard_bytes, min_items in json.loads(sys.argv[1]):
    sharded.SHARD_BYTES = shard_bytes
    sharded.MIN_ITEMS_FOR_WORKERS = min_items
    datasets.load(ml_collections.ConfigDict(config))
"""


def _identity_image(path: pathlib.Path, identity: int, size: int) -> None:
    """A solid PNG whose colour is ``identity`` (< 2**24), so a record names its file (resizing
    keeps a solid colour exactly)."""
    rgb = np.frombuffer(identity.to_bytes(3, 'big'), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.broadcast_to(rgb, (size, size, 3)).copy()).save(path)


def _identity(image: np.ndarray) -> int:
    assert (image == image[0, 0]).all()
    return int.from_bytes(image[0, 0].tobytes(), 'big')


def _make_folder(
    root: pathlib.Path, train: int, test: int, bad: int = 0, size: int = 8
) -> dict[str, int]:
    """Training/ and Test/ with ``train`` and ``test`` images of ``size`` px per class (``bad``
    zero-byte files among each class's training images); returns each good file's key ->
    identity."""
    identities = {}
    for split, n in (('Training', train), ('Test', test)):
        for c, name in enumerate(CLASSES):
            for i in range(n):
                path = root / split / name / f'{i:04d}.png'
                if split == 'Training' and i < bad:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(b'')
                    continue
                key = path.relative_to(root).as_posix()
                identities[key] = len(identities) + 1
                _identity_image(path, identities[key], size)
    return identities


def _config(root: pathlib.Path, data_dir: pathlib.Path, **overrides) -> ml_collections.ConfigDict:
    config = {
        'name': 'fruits360',
        'data_dir': str(data_dir),
        'folder': str(root),
        'image_size': 8,
        'channels': 3,
        'validation_fraction': 0.2,
        'seed': 0,
    }
    return ml_collections.ConfigDict({**config, **overrides})


def _prepare_without_tensorflow(tmp_path: pathlib.Path, jobs) -> None:
    """Runs ``_PREPARE`` on ``(config, shard_bytes, min_items)`` jobs, TensorFlow blocked."""
    blocker = tmp_path / 'no_tensorflow'
    blocker.mkdir(exist_ok=True)
    (blocker / 'sitecustomize.py').write_text(_NO_TENSORFLOW)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(blocker), str(REPO)])}
    args = json.dumps([[config.to_dict(), *rest] for config, *rest in jobs])
    out = subprocess.run(
        [sys.executable, '-c', _PREPARE, args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def _split_identities(ds) -> dict[str, list[int]]:
    """Each split's records, as the identities of their files, in order."""
    return {
        split: [_identity(source[i]['image']) for i in range(len(source))]
        for split, source in ds.splits.items()
    }


def test_tensorflow_is_blocked_in_the_preparing_subprocess(tmp_path):
    (tmp_path / 'sitecustomize.py').write_text(_NO_TENSORFLOW)
    code = (
        'import importlib.util, sys\n'
        'assert type(sys.meta_path[0]).__name__ == "_WithoutTensorFlow"\n'
        'assert importlib.util.find_spec("tensorflow") is None\n'
        'import tensorflow'
    )
    env = {**os.environ, 'PYTHONPATH': str(tmp_path)}
    out = subprocess.run(
        [sys.executable, '-c', code], env=env, capture_output=True, text=True, check=False
    )
    assert out.stderr.endswith("ModuleNotFoundError: No module named 'tensorflow'\n")


@pytest.fixture(scope='module')
def prepared_without_tensorflow(tmp_path_factory):
    """One subprocess without TensorFlow prepares, in shards of a few images: a folder on
    worker processes, the same folder in-process, and the smoke glyph set on workers."""
    tmp_path = tmp_path_factory.mktemp('without_tensorflow')
    identities = _make_folder(tmp_path / 'fruits', train=60, test=10, bad=2)
    configs = {
        'workers': _config(tmp_path / 'fruits', tmp_path / 'workers'),
        'in_process': _config(tmp_path / 'fruits', tmp_path / 'in_process'),
        'glyphs': from_file(REPO / 'configs' / 'glyph_smoke.py').dataset,
    }
    configs['glyphs'].update(
        data_dir=str(tmp_path / 'glyphs'),
        train_per_class=2,
        validation_per_class=1,
        test_per_class=1,
    )
    shard_bytes = 16 * 8 * 8 * 3  # 16 images
    _prepare_without_tensorflow(
        tmp_path,
        [
            (configs['workers'], shard_bytes, 0),
            (configs['in_process'], shard_bytes, 10**9),
            (configs['glyphs'], 40 * 32 * 32, 0),
        ],
    )
    return configs, identities


@pytest.mark.slow  # one subprocess preparing three datasets on worker processes
def test_many_shards_without_tensorflow_every_image_once_in_stored_order(
    prepared_without_tensorflow,
):
    configs, identities = prepared_without_tensorflow
    ds = datasets.load(configs['workers'])
    assert ds.prepare_seconds == 0.0  # read as prepared, not prepared again here
    got = _split_identities(ds)
    assert got == _split_identities(datasets.load(configs['in_process']))
    info = datasets.builder(configs['workers']).info
    assert info.splits['train'].num_shards == -(-(3 * 60 - 3 * 12) // 16) > 1
    # Every good file exactly once; each split in the stored order of its files' ids.
    scan = folders.scan_folder(info.metadata['source'], folders.Fruits360.LAYOUT)
    splits, _ = folders.assign_splits(
        scan,
        validation_fraction=0.2,
        min_validation_per_class=10,
        seed=0,
    )
    for split, samples in splits.items():
        ids = [folders._file_id(s, scan.class_names) for s in samples]
        stored = [samples[i] for i in sharded.stored_order(ids, split)]
        assert got[split] == [identities[s.key] for s in stored if s.key in identities]
    assert sorted(itertools.chain(*got.values())) == sorted(identities.values())
    assert info.metadata['bad_files'] == 3 * 2
    train = np.stack([ds.splits['train'][i]['image'] for i in range(len(ds.splits['train']))])
    np.testing.assert_allclose(ds.mean, train.reshape(-1, 3).mean(0), rtol=1e-12)
    np.testing.assert_allclose(ds.std, train.reshape(-1, 3).std(0), rtol=1e-12)


def _digest(ds) -> str:
    h = hashlib.sha256()
    for split in datasets.SPLITS:
        for i in range(len(ds.splits[split])):
            record = ds.splits[split][i]
            h.update(record['image'].tobytes() + int(record['label']).to_bytes(2, 'little'))
    return h.hexdigest()


@pytest.mark.slow  # one subprocess preparing three datasets on worker processes
def test_glyphs_in_shards_on_workers_without_tensorflow_match_one_shard_in_process(
    prepared_without_tensorflow, tmp_path
):
    configs, _ = prepared_without_tensorflow
    in_shards = datasets.load(configs['glyphs'])
    assert in_shards.prepare_seconds == 0.0
    assert datasets.builder(configs['glyphs']).info.splits['train'].num_shards > 1
    config = configs['glyphs'].copy_and_resolve_references()
    config.data_dir = str(tmp_path)
    reference = datasets.load(config)  # here: one shard per split, rendered in-process
    assert (in_shards.mean, in_shards.std) == (reference.mean, reference.std)
    assert _digest(in_shards) == _digest(reference)


def test_pixel_histogram_and_shard_plan():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 4, 4, 3), np.uint8)
    histogram = sharded.PixelHistogram(3)
    for image in images:
        histogram.add(image)
    mean, std = histogram.mean_std()
    np.testing.assert_allclose(mean, images.reshape(-1, 3).mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, images.reshape(-1, 3).std(0), rtol=1e-12)
    sizes = sharded.shard_sizes(1000, sharded.SHARD_BYTES // 100)
    assert sum(sizes) == 1000 and len(sizes) == 10 and max(sizes) - min(sizes) <= 1
    assert sharded.shard_sizes(3, sharded.SHARD_BYTES * 10) == [1, 1, 1]


def _start_preparing(config, shard_images: int) -> subprocess.Popen:
    image_bytes = config.image_size**2 * config.channels
    args = json.dumps([[config.to_dict(), shard_images * image_bytes, 256]])  # on workers
    return subprocess.Popen(
        [sys.executable, '-c', _PREPARE, args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _start_writing(config, shard_images: int) -> subprocess.Popen:
    """Starts preparing ``config``; returns once the first shard file is in its new
    ``incomplete.*`` folder (not in one that a killed run left), or once it exited."""
    config_dir = datasets.builder(config).data_path.parent
    leftovers = set(config_dir.glob('incomplete.*'))
    child = _start_preparing(config, shard_images)
    while child.poll() is None and not any(
        shard.parent not in leftovers for shard in config_dir.glob('incomplete.*/*.array_record*')
    ):
        time.sleep(0.02)
    return child


@pytest.mark.slow
def test_sigkill_while_writing_then_the_next_run_prepares_everything(tmp_path):
    identities = _make_folder(tmp_path / 'fruits', train=600, test=50, size=48)
    config = _config(tmp_path / 'fruits', tmp_path / 'data')
    config_dir = datasets.builder(config).data_path.parent
    # A reference run measures how long the shards take to write on this (busy) machine.
    reference = _config(tmp_path / 'fruits', tmp_path / 'reference')
    child = _start_writing(reference, shard_images=20)
    started = time.monotonic()
    assert child.wait(timeout=300) == 0
    writing = time.monotonic() - started
    expected = _split_identities(datasets.load(reference))
    rng = random.Random()
    kills = 0
    for attempt in range(6):  # two SIGKILLs at random moments while the shards are written
        child = _start_writing(config, shard_images=20)
        time.sleep(rng.uniform(0.0, 0.8 * writing))
        workers = _children(child.pid)
        child.send_signal(signal.SIGKILL)
        child.wait()
        if datasets.builder(config).is_prepared():  # complete before the kill: try again
            assert _split_identities(datasets.load(config)) == expected
            datasets.builder(config).data_path.rename(tmp_path / f'finished{attempt}')
            continue
        kills += 1
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers), 'orphaned workers left running'
        if kills == 2:
            break
    assert kills == 2
    assert any(config_dir.glob('incomplete.*'))  # what the killed runs left behind
    ds = datasets.load(config)  # the next run
    assert ds.prepare_seconds > 0
    assert not any(config_dir.glob('incomplete.*'))
    assert _split_identities(ds) == expected
    assert sorted(itertools.chain(*expected.values())) == sorted(identities.values())


def _children(pid: int) -> list[int]:
    out = subprocess.run(['pgrep', '-P', str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = pathlib.Path(f'/proc/{pid}/stat')
    return not (stat.exists() and stat.read_text().split(')')[-1].split()[0] == 'Z')


class _Keys(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """TFDS's own shuffling writer, as every dataset was prepared before ``sharded``."""

    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({'index': np.int64})
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(n) for split, n in (('train', 40), ('test', 7))}

    def _generate_examples(self, n):
        for index in range(n):
            yield index, {'index': index}


def test_records_keep_the_order_of_tfds_own_writer(tmp_path):
    """Data prepared before ``sharded`` holds the same records at the same indices."""
    builder = _Keys(data_dir=str(tmp_path), file_format='array_record')
    builder.download_and_prepare()
    for split, source in builder.as_data_source().items():
        written = [int(source[i]['index']) for i in range(len(source))]
        assert written == sharded.stored_order(range(len(source)), split)
        assert written != sorted(written)
