"""Fruits-360 in every layout ``image_folder`` recognises: the same prepared data and test
accuracy as the ``fruits360`` preset?

Restructures a Fruits-360 folder (``Training/<class>/*.jpg``, ``Test/<class>/*.jpg``) under
``--workdir`` without copying image bytes (symlinked class folders; hard links for the label
file, whose paths must resolve inside its folder) and never writes to the source. Rows:

* the preset: ``configs/fruits_cnn.py`` (``dataset.name=fruits360``);
* split folders with the preset's names, found by ``image_folder`` on its own;
* split folders with other usual names and case (``train/``, ``TESTING/``);
* a label file ``labels.csv`` (``path,label,split``, paths relative to the file);
* explicit split folders with unusual names (``dataset.splits.train=fit``, ``.test=holdout``).

The layout rows use ``configs/folder_cnn.py``'s dataset fields with the command-line fields
shown in the table, and the preset's image size, channels and split policy. Each row prepares
its data into a scratch ``data_dir``, hashes every record (image bytes and label) of each split
in stored order, then trains basic_cnn with ``configs/fruits_cnn.py``'s recipe and seed for
``--epochs`` epochs. Identical records in the same order with the same seed should give the
same test accuracy; the table says whether the records equal the preset's (or are the same
records in another order, or differ) and the accuracy each row reached.

Command (from the repository root)::

    .venv/bin/python benchmarks/image_folder_layouts.py \\
        --source=../shared/data/fruits360-mini --epochs=2 [--workdir=DIR]

``--classes=N`` keeps the first N classes by name and ``--batch_size`` overrides the recipe's,
for a cheap check. Without ``--workdir`` a temporary folder is used and deleted afterwards.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import hashlib
import os
import pathlib
import shutil
import tempfile

import ml_collections

from flaxcnn.config import from_file
from flaxcnn.data import datasets, folders
from flaxcnn.training import train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]
PRESET_CONFIG = REPO / 'configs' / 'fruits_cnn.py'
FOLDER_CONFIG = REPO / 'configs' / 'folder_cnn.py'
SOURCE_SPLITS = {'train': 'Training', 'test': 'Test'}
# The preset's folder-builder fields the layout rows take too (image size, channels, split
# policy); the folder (or label file) is each layout's own.
OWN_DATASET_FIELDS = ('folder', 'labels', 'splits')


@dataclasses.dataclass(frozen=True)
class Layout:
    """One restructured copy of the dataset and the dataset fields that point at it."""

    name: str
    config: pathlib.Path  # configs/fruits_cnn.py for the preset, else configs/folder_cnn.py
    fields: dict[str, str]  # dataset fields, dotted below config.dataset ('splits.train')


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """What was prepared: the class list, and per split its size and record hashes."""

    class_names: tuple[str, ...]
    sizes: dict[str, int]
    ordered: dict[str, str]  # hash of the records in stored order
    unordered: dict[str, str]  # hash of the sorted record hashes: the same records, any order


def choose_classes(source: pathlib.Path, count: int) -> list[str]:
    """The source's class folders by name (code point order), the first ``count`` if > 0."""
    train = source / SOURCE_SPLITS['train']
    if not train.is_dir():
        raise SystemExit(f'{train} does not exist: is --source a Fruits-360 folder?')
    names = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith('.'))
    if not names:
        raise SystemExit(f'{train} holds no class folders: is --source a Fruits-360 folder?')
    return names[:count] if count > 0 else names


def link_class_folders(
    source: pathlib.Path, target: pathlib.Path, split_dirs: dict[str, str], classes: list[str]
) -> None:
    """``target/<split folder>/<class>``: a symlink to the source's class folder, per split."""
    for split, dirname in split_dirs.items():
        (target / dirname).mkdir(parents=True)
        for name in classes:
            (target / dirname / name).symlink_to(source / SOURCE_SPLITS[split] / name)


def write_label_file(
    source: pathlib.Path, target: pathlib.Path, classes: list[str]
) -> pathlib.Path:
    """``target/labels.csv`` listing ``images/<split>/<class>/<file>`` (hard links to the source's
    images: the label file's paths must resolve inside its folder, which a symlink does not)."""
    rows = [('path', 'label', 'split')]
    for split, dirname in SOURCE_SPLITS.items():
        for name in classes:
            folder = target / 'images' / split / name
            folder.mkdir(parents=True)
            for image in sorted((source / dirname / name).iterdir()):
                os.link(image, folder / image.name)
                rows.append((f'images/{split}/{name}/{image.name}', name, split))
    labels = target / 'labels.csv'
    with open(labels, 'w', newline='', encoding='utf-8') as file:
        csv.writer(file).writerows(rows)
    return labels


def build_layouts(source: pathlib.Path, root: pathlib.Path, classes: list[str]) -> list[Layout]:
    """Every layout under ``root``, the preset first."""
    preset = root / 'preset'
    link_class_folders(source, preset, SOURCE_SPLITS, classes)
    renamed = root / 'split_folders'
    link_class_folders(source, renamed, {'train': 'train', 'test': 'TESTING'}, classes)
    explicit = root / 'explicit_splits'
    link_class_folders(source, explicit, {'train': 'fit', 'test': 'holdout'}, classes)
    labels = write_label_file(source, root / 'label_file', classes)
    return [
        Layout('preset fruits360 (Training/, Test/)', PRESET_CONFIG, {'folder': str(preset)}),
        Layout('split folders, preset names', FOLDER_CONFIG, {'folder': str(preset)}),
        Layout('split folders train/, TESTING/', FOLDER_CONFIG, {'folder': str(renamed)}),
        Layout('label file (path,label,split)', FOLDER_CONFIG, {'labels': str(labels)}),
        Layout(
            'explicit splits fit/, holdout/',
            FOLDER_CONFIG,
            {'folder': str(explicit), 'splits.train': 'fit', 'splits.test': 'holdout'},
        ),
    ]


def make_config(
    layout: Layout, data_dir: pathlib.Path, epochs: int, batch_size: int
) -> ml_collections.ConfigDict:
    """The preset's recipe (model, optimizer, seed, augmentation) with ``layout``'s dataset."""
    config = from_file(PRESET_CONFIG)
    if layout.config != PRESET_CONFIG:
        preset_dataset, config.dataset = config.dataset, from_file(layout.config).dataset
        for field in folders.CONFIG_FIELDS:
            if field in preset_dataset and field not in OWN_DATASET_FIELDS:
                config.dataset[field] = preset_dataset[field]
    for dotted, value in layout.fields.items():
        *parents, field = dotted.split('.')
        node = config.dataset
        for parent in parents:
            node = node[parent]
        node[field] = value
    config.dataset.data_dir = str(data_dir)
    config.num_epochs = epochs
    config.batch_size = batch_size or config.batch_size
    return config


def fingerprint(config: ml_collections.ConfigDict) -> Fingerprint:
    """Prepares ``config.dataset`` (unless done) and hashes every record of each split."""
    dataset = datasets.load(config.dataset)
    sizes, ordered, unordered = {}, {}, {}
    for split, source in dataset.splits.items():
        records = []
        for i in range(len(source)):
            record = source[i]
            digest = hashlib.sha256(record['image'].tobytes())
            digest.update(int(record['label']).to_bytes(8, 'little'))
            records.append(digest.digest())
        sizes[split] = len(records)
        ordered[split] = hashlib.sha256(b''.join(records)).hexdigest()
        unordered[split] = hashlib.sha256(b''.join(sorted(records))).hexdigest()
    return Fingerprint(dataset.class_names, sizes, ordered, unordered)


def compare(found: Fingerprint, preset: Fingerprint) -> str:
    """'yes', or how the prepared data differs from the preset's, split by split."""
    if found.class_names != preset.class_names:
        return 'no: other class list'
    differ = [s for s in found.ordered if found.ordered[s] != preset.ordered[s]]
    if not differ:
        return 'yes'
    other = [s for s in differ if found.unordered[s] != preset.unordered[s]]
    reordered = [s for s in differ if s not in other]
    parts = [f'other records in {", ".join(other)}'] if other else []
    parts += [f'same records, other order in {", ".join(reordered)}'] if reordered else []
    return 'no: ' + '; '.join(parts)


def train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """Trains and tests ``config`` in a fresh ``workdir``; the run's summary."""
    shutil.rmtree(workdir, ignore_errors=True)
    return train_and_evaluate(config, workdir)


def command_line(layout: Layout, root: pathlib.Path) -> str:
    """The layout's dataset fields as ``--config.dataset`` flags, paths shown below ``$W``."""
    config = f'--config={layout.config.relative_to(REPO)}'
    fields = [
        f'--config.dataset.{k}={v.replace(str(root), "$W")}' for k, v in layout.fields.items()
    ]
    return ' '.join([config, *fields])


def print_table(rows: list[dict]) -> None:
    header = (
        'layout',
        'command-line dataset fields',
        'train/valid/test',
        'record hash equal to preset?',
        'test accuracy',
        'train s',
    )
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for row in rows:
        print('| ' + ' | '.join(str(row[k]) for k in header) + ' |')


def explain(rows: list[dict]) -> None:
    """Says whether identical records gave identical accuracy, and why a row differs."""
    preset = rows[0]['test accuracy']
    for row in rows[1:]:
        same_data = row['record hash equal to preset?'] == 'yes'
        same_accuracy = row['test accuracy'] == preset
        if same_data and not same_accuracy:
            print(
                f'- {row["layout"]}: identical records and seed but test accuracy '
                f'{row["test accuracy"]} != {preset}: training is not bit-reproducible here.'
            )
        elif not same_data:
            print(
                f'- {row["layout"]}: prepared data differs ({row["record hash equal to preset?"]}): '
                "validation carving and the stored order hash each file's path relative to the "
                'folder, split folder included, so other folder names carve other files.'
            )


def run(args: argparse.Namespace, root: pathlib.Path) -> None:
    for made in ('layouts', 'data', 'runs'):  # fresh every time: no stale cache or resumed run
        shutil.rmtree(root / made, ignore_errors=True)
    source = args.source.expanduser().resolve()
    classes = choose_classes(source, args.classes)
    layouts = build_layouts(source, root / 'layouts', classes)
    rows, preset = [], None
    for index, layout in enumerate(layouts):
        config = make_config(layout, root / 'data', args.epochs, args.batch_size)
        found = fingerprint(config)
        preset = preset or found  # the preset's row comes first
        summary = train(config, root / 'runs' / f'{index}')
        rows.append(
            {
                'layout': layout.name,
                'command-line dataset fields': command_line(layout, root / 'layouts'),
                'train/valid/test': '/'.join(str(n) for n in found.sizes.values()),
                'record hash equal to preset?': compare(found, preset),
                'test accuracy': f'{summary["test_accuracy"]:.4f}',
                'train s': f'{summary["train_seconds"]:.0f}',
            }
        )
    print(
        f'\n{datetime.datetime.now():%Y-%m-%d %H:%M}, {len(classes)} classes of {source}, '
        f'{args.epochs} epoch(s), $W = {root / "layouts"}; load average '
        f'{os.getloadavg()[0]:.1f} (a shared machine: seconds are indicative)\n'
    )
    print_table(rows)
    explain(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--source', type=pathlib.Path, required=True, help='Fruits-360 folder')
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--workdir', type=pathlib.Path, help='kept; default: a temporary folder')
    parser.add_argument('--classes', type=int, default=0, help='first N classes by name; 0 = all')
    parser.add_argument('--batch_size', type=int, default=0, help="0 = the preset recipe's")
    args = parser.parse_args(argv)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix='image_folder_layouts_') as root:
            run(args, pathlib.Path(root))


if __name__ == '__main__':
    main()
