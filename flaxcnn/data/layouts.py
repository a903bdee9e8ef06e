"""Where the images of a dataset folder are and what their labels are, before any decoding.

A dataset is found in one of these layouts (``detect`` tries them in this order):

* a label file (``dataset.labels``): CSV, TSV or whitespace-separated text with a path column, a
  label column and optionally a split column, paths relative to the file or to the folder;
* explicit split folders (``dataset.splits.train=...``), each holding one folder per class;
* split folders with the usual names (``train``/``training``, ``val``/``valid``/``validation``/
  ``dev``, ``test``/``testing``, any case), each holding one folder per class;
* one folder of class folders and no split folders.

Splits a layout lacks (validation, test) are carved from train later (``folders.assign_splits``).
Class names are compared exactly: ``a`` and ``A`` are two classes.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib

SPLITS = ('train', 'validation', 'test')
SPLIT_NAMES = {
    'train': ('train', 'training'),
    'validation': ('val', 'valid', 'validation', 'dev'),
    'test': ('test', 'testing'),
}
# Header names recognised when dataset.path_column / label_column / split_column are ''.
PATH_COLUMNS = ('path', 'image', 'filename', 'file', 'image_path', 'filepath', 'img')
LABEL_COLUMNS = ('label', 'class', 'category', 'target', 'class_name')
SPLIT_COLUMNS = ('split', 'subset', 'set', 'fold')
_OS_METADATA = frozenset({'thumbs.db', 'desktop.ini', 'ehthumbs.db'})
KNOWN_LAYOUTS = (
    '(1) split folders train/ (or training/), optional val/ (valid/, validation/, dev/) and '
    'test/ (testing/), any case, each holding one folder per class; (2) class folders only, '
    'validation and test carved from them; (3) a label file, dataset.labels=FILE.csv|.tsv|.txt '
    'with columns path,label[,split]; (4) explicit split folders, dataset.splits.train=DIR '
    '(and .validation, .test).'
)


class DatasetError(ValueError):
    """The folder does not hold a dataset in a known layout, or its data is unusable: the user's
    data to fix, reported in one line by the commands."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a dataset's splits live under its folder, and how to explain it."""

    split_dirs: dict[str, str]  # split name -> folder name ('' = the dataset folder)
    tree: str  # the expected layout, shown in errors
    optional: tuple[str, ...] = ('validation',)  # splits that may be missing (then carved)


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """One candidate image file: its path, its path relative to the folder, its label.

    Strings and slots: a folder of a million files is a million of these in memory.
    """

    path: str
    key: str
    label: int


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """The class list and candidate files of each split found, plus ignored entries."""

    root: pathlib.Path
    class_names: tuple[str, ...]
    splits: dict[str, list[Sample]]  # 'train' always; 'validation', 'test' when present
    ignored: list[str]
    layout: str  # which layout was found, for the report


def ignored_name(name: str) -> bool:
    """Hidden files and OS metadata: never images of the dataset."""
    return name.startswith('.') or name.lower() in _OS_METADATA


def _layout_error(message: str, root: pathlib.Path, layout: Layout) -> str:
    return f'{message}\nExpected this layout under {root}:\n{layout.tree}'


def _hint(root: pathlib.Path, layout: Layout) -> str:
    train_dir = layout.split_dirs['train']
    found = sorted(root.glob(f'*/{train_dir}')) + sorted(root.glob(f'*/*/{train_dir}'))
    return f' Did you mean folder={str(found[0].parent)!r}?' if found else ''


def _class_folders(directory: pathlib.Path, ignored: list[str]) -> dict[str, str]:
    classes = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.is_dir() and not ignored_name(entry.name):
            classes[entry.name] = entry.path
        else:
            ignored.append(entry.path)
    return classes


def scan_folder(root: str | os.PathLike, layout: Layout, name: str = 'split folders') -> FolderScan:
    """Lists the class folders and candidate files of ``root`` (no decoding); checks the layout.

    A split folder ``''`` is ``root`` itself (class folders only)."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            _layout_error(f'Dataset folder {root} does not exist.', root, layout)
        )
    class_names = None
    splits, ignored = {}, []
    for split, dirname in layout.split_dirs.items():
        split_dir = root / dirname
        if not split_dir.is_dir():
            if split in layout.optional:
                continue
            raise FileNotFoundError(
                _layout_error(
                    f'Split folder {split_dir} is missing.{_hint(root, layout)}', root, layout
                )
            )
        classes = _class_folders(split_dir, ignored)
        if not classes:
            raise DatasetError(_layout_error(f'{split_dir} holds no class folders.', root, layout))
        if class_names is None:
            class_names = tuple(classes)  # the train split comes first
        elif set(classes) != set(class_names):
            missing = sorted(set(class_names) - set(classes))
            extra = sorted(set(classes) - set(class_names))
            train_dir = root / layout.split_dirs['train']
            raise DatasetError(
                f'{split_dir} does not hold the class folders of {train_dir}: missing '
                f'{missing}, extra {extra} (every split needs the classes of train, no others).'
            )
        samples = []
        for label, class_name in enumerate(class_names):
            count = len(samples)
            for entry in sorted(os.scandir(classes[class_name]), key=lambda e: e.name):
                if ignored_name(entry.name) or entry.is_dir():
                    ignored.append(entry.path)
                else:
                    key = '/'.join(p for p in (dirname, class_name, entry.name) if p)
                    samples.append(Sample(entry.path, key, label))
            if len(samples) == count:
                raise DatasetError(
                    _layout_error(f'Class folder {classes[class_name]} is empty.', root, layout)
                )
        splits[split] = samples
    return FolderScan(root, class_names, splits, ignored, name)


def _split_folders(root: pathlib.Path) -> dict[str, str]:
    """The usual split folder names found in ``root``, any case: split -> folder name."""
    found = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir():
            continue
        for split, names in SPLIT_NAMES.items():
            if entry.name.lower() in names:
                if split in found:
                    raise DatasetError(
                        f'{root} holds two {split} folders, {found[split]!r} and '
                        f'{entry.name!r}; keep one, or name them with dataset.splits.{split}.'
                    )
                found[split] = entry.name
    return found


def _tree(split_dirs: dict[str, str]) -> str:
    return '\n'.join(f'  {d or "."}/<class name>/<image>   ({s})' for s, d in split_dirs.items())


def detect(
    root: str | os.PathLike,
    *,
    labels: str = '',
    splits: dict[str, str] | None = None,
    columns: dict[str, str] | None = None,
) -> FolderScan:
    """The dataset under ``root`` in the first layout that fits (see the module docstring)."""
    root = pathlib.Path(root)
    if labels:
        return read_label_file(labels, root, **(columns or {}))
    if not root.is_dir():
        raise FileNotFoundError(f'Dataset folder {root} does not exist.')
    splits = {s: d for s, d in (splits or {}).items() if d}
    if splits:
        if 'train' not in splits:
            raise DatasetError(f'dataset.splits names {sorted(splits)} but not train.')
        layout = Layout(splits, _tree(splits), ())
        return scan_folder(root, layout, 'explicit split folders')
    found = _split_folders(root)
    if 'train' in found:
        found = {s: found[s] for s in SPLITS if s in found}
        return scan_folder(root, Layout(found, _tree(found), ()), 'split folders')
    if found:
        raise DatasetError(
            f'{root} holds {sorted(found.values())} but no train folder. Known layouts: '
            f'{KNOWN_LAYOUTS}'
        )
    ignored: list[str] = []
    classes = _class_folders(root, ignored)
    has_images = classes and all(
        any(not e.is_dir() and not ignored_name(e.name) for e in os.scandir(p))
        for p in classes.values()
    )
    if not has_images:
        raise DatasetError(
            f'{root} is not in a layout flaxcnn knows (no split folders, and not only class '
            f'folders of images). Known layouts: {KNOWN_LAYOUTS}'
        )
    only = {'train': ''}
    return scan_folder(root, Layout(only, _tree(only), ()), 'class folders')


def _column(header: list[str], wanted: str, defaults: tuple[str, ...], what: str, file) -> int:
    lowered = [h.strip().lower() for h in header]
    for name in (wanted,) if wanted else defaults:
        if name.lower() in lowered:
            return lowered.index(name.lower())
    if not wanted and what == 'split':
        return -1
    raise DatasetError(
        f'{file}: no {what} column in the header {header}; expected one of '
        f'{[wanted] if wanted else list(defaults)} (set dataset.{what}_column).'
    )


def _rows(file: pathlib.Path) -> list[list[str]]:
    text = file.read_text(encoding='utf-8-sig')
    if file.suffix.lower() == '.csv':
        return list(csv.reader(text.splitlines()))
    if file.suffix.lower() == '.tsv':
        return list(csv.reader(text.splitlines(), delimiter='\t'))
    if file.suffix.lower() == '.txt':
        delimiter = '\t' if '\t' in text else ',' if ',' in text else None
        if delimiter:
            return list(csv.reader(text.splitlines(), delimiter=delimiter))
        return [line.split() for line in text.splitlines()]
    raise DatasetError(f'{file}: a label file must end in .csv, .tsv or .txt.')


def _split_name(value: str, file, line: int) -> str:
    for split, names in SPLIT_NAMES.items():
        if value.strip().lower() in names:
            return split
    raise DatasetError(
        f'{file} line {line}: split {value!r} is not one of '
        f'{[n for names in SPLIT_NAMES.values() for n in names]}.'
    )


def read_label_file(
    file: str | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    path_column: str = '',
    label_column: str = '',
    split_column: str = '',
) -> FolderScan:
    """The samples a label file lists. Without a header naming a path column (and none set),
    the columns are path, label and optionally split. Every path must be inside ``root`` (the
    dataset folder, or the file's folder), and is read relative to the file or to ``root``."""
    file = pathlib.Path(file).expanduser()
    if not file.is_absolute() and root and not file.exists():
        file = pathlib.Path(root) / file
    if not file.is_file():
        raise FileNotFoundError(f'Label file {file} does not exist.')
    file = file.resolve()
    root = pathlib.Path(root).expanduser().resolve() if root else file.parent
    rows = [(i + 1, r) for i, r in enumerate(_rows(file)) if any(c.strip() for c in r)]
    if not rows:
        raise DatasetError(f'{file} lists no images.')
    header = [c.strip().lower() for c in rows[0][1]]
    if path_column or label_column or set(header) & set(PATH_COLUMNS):
        columns = (
            _column(rows[0][1], path_column, PATH_COLUMNS, 'path', file),
            _column(rows[0][1], label_column, LABEL_COLUMNS, 'label', file),
            _column(rows[0][1], split_column, SPLIT_COLUMNS, 'split', file),
        )
        rows = rows[1:]
    else:
        columns = (0, 1, 2 if len(rows[0][1]) > 2 else -1)
    entries, seen = [], {}
    for line, row in rows:
        if len(row) <= max(columns):
            raise DatasetError(f'{file} line {line}: expected {max(columns) + 1} columns: {row}.')
        given, label = row[columns[0]].strip(), row[columns[1]].strip()
        if not given:
            raise DatasetError(f'{file} line {line}: the path is empty.')
        if not label:
            raise DatasetError(f'{file} line {line}: the label of {given!r} is empty.')
        bases = dict.fromkeys([file.parent, root])
        path = next((b / given for b in bases if (b / given).is_file()), None)
        if path is None:
            raise DatasetError(
                f'{file} line {line}: {given!r} is not a file (read relative to '
                f'{" and to ".join(map(str, bases))}).'
            )
        path = path.resolve()
        if not path.is_relative_to(root):
            raise DatasetError(f'{file} line {line}: {given!r} is outside the folder {root}.')
        if path in seen:
            raise DatasetError(f'{file} lines {seen[path]} and {line}: {given!r} is listed twice.')
        seen[path] = line
        split = _split_name(row[columns[2]], file, line) if columns[2] >= 0 else 'train'
        entries.append((split, str(path), path.relative_to(root).as_posix(), label))
    class_names = tuple(sorted({e[3] for e in entries if e[0] == 'train'}))
    if not class_names:
        raise DatasetError(f'{file} lists no train images.')
    index = {name: i for i, name in enumerate(class_names)}
    extra = sorted({e[3] for e in entries} - set(class_names))
    if extra:
        raise DatasetError(
            f'{file}: labels {extra} appear in no train row (train has {list(class_names)}).'
        )
    splits: dict[str, list[Sample]] = {}
    for split, path, key, label in entries:
        splits.setdefault(split, []).append(Sample(path, key, index[label]))
    splits = {s: sorted(splits[s], key=lambda x: x.key) for s in SPLITS if s in splits}
    return FolderScan(root, class_names, splits, [], f'label file {file}')
