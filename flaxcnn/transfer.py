"""Starting a run from pretrained weights: ``config.init.source`` (``--config.init.source=PATH``).

PATH is an imported-weights folder (``python -m flaxcnn.weights import``) or a flaxcnn run
workdir (its best checkpoint, else its latest). Parameters and BatchNorm statistics are matched
by path and shape, for the same model name:

  same shape                  loaded
  the classifier head         re-initialised when its shape differs (another class count, or a
                              flatten head at another image size), and said so
  the input conv              adapted when only its input channels differ, as timm's
                              ``adapt_input_conv`` does: 3 -> 1 sums over the channels, 1 -> 3
                              (any I -> C) repeats them and scales by I / C; and said so
  any other shape             an error naming the file, the parameter and the fix
  absent from the source      left at its initial value and named in the log

Each model class names its classifier (``HEAD``) and first conv (``INPUT_CONV``). A different
image size is allowed wherever the shapes still match (global-pooling nets). Runs that resume
read their checkpoint instead: ``training`` calls this only for a run's first start.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any

import ml_collections
import numpy as np
from flax import nnx

from flaxcnn import checkpoint, convert
from flaxcnn.convert import WeightsError
from flaxcnn.convert.folder import METADATA

Path = tuple[str | int, ...]
SHOWN = 8  # parameter names listed per line of the log before '... and N more'


@dataclasses.dataclass(frozen=True)
class Source:
    """What ``init.source`` points at, read from its metadata only."""

    path: pathlib.Path
    kind: str  # 'weights' (an imported folder) or 'run'
    model: str
    num_classes: int
    in_channels: int
    image_size: int
    normalization: str  # 'imagenet' or 'dataset'
    record: dict[str, Any]  # recorded in the new run's metadata and summary

    def describe(self) -> str:
        if self.kind == 'weights':
            return f'{self.path} ({self.model} weights from {self.record["file"]})'
        return f'{self.path} ({self.model} run, step {self.record["step"]})'


def init_source(config: ml_collections.ConfigDict) -> str:
    """The ``init.source`` path of ``config``, '' for none."""
    return config.get('init', {}).get('source', '')


def read_source(path: str | pathlib.Path) -> Source:
    """The weights folder or run at ``path``, or an error saying what it is not."""
    path = pathlib.Path(path).expanduser()
    if (path / METADATA).is_file():
        meta = convert.read_metadata(path)
        return Source(
            path=path,
            kind='weights',
            model=meta['model'],
            num_classes=meta['num_classes'],
            in_channels=meta['in_channels'],
            image_size=meta['image_size'],
            normalization=meta['normalization'],
            record={'path': str(path.absolute()), 'kind': 'weights', **meta['source']},
        )
    if (path / 'checkpoints').is_dir():
        ckpts = checkpoint.Checkpoints(path, read_only=True)
        try:
            step, meta = ckpts.read_intact(ckpts.read_meta)
        finally:
            ckpts.close()
        if step is not None:
            height, _, channels = meta['image_shape']
            return Source(
                path=path,
                kind='run',
                model=meta['model'],
                num_classes=len(meta['class_names']),
                in_channels=channels,
                image_size=height,
                normalization=meta['config']['input']['normalization'] or 'dataset',
                record={'path': str(path.absolute()), 'kind': 'run', 'step': step},
            )
    raise WeightsError(
        f'init.source={path}: neither an imported-weights folder (no {METADATA}) nor a flaxcnn run '
        '(no checkpoint in checkpoints/). Give a folder written by python -m flaxcnn.weights '
        'import, or the --workdir of a run that saved a checkpoint.'
    )


def resolve_normalization(
    config: ml_collections.ConfigDict, channels: int
) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose ``input.normalization`` is set: left as given, else (``''``)
    'imagenet' when the ``init.source`` weights say so and the images have 3 ``channels`` (a
    1-channel model starting from them normalizes with its dataset's statistics), else
    'dataset'."""
    config = config.copy_and_resolve_references()
    if not config.input.normalization:
        wanted = (
            read_source(init_source(config)).normalization if init_source(config) else 'dataset'
        )
        config.input.normalization = wanted if channels == 3 else 'dataset'
    return config


def adapt_input_conv(kernel: np.ndarray, in_channels: int) -> np.ndarray:
    """An HWIO conv kernel for ``in_channels`` inputs, as timm's ``adapt_input_conv``: summed
    over its input channels for 1, else repeated to ``in_channels`` and scaled by I / C, so
    that the same image, in gray or in colour, gives the same response."""
    source_channels = kernel.shape[2]
    if in_channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    repeats = math.ceil(in_channels / source_channels)
    tiled = np.tile(kernel, (1, 1, repeats, 1))[:, :, :in_channels]
    return tiled * (source_channels / in_channels)


@dataclasses.dataclass
class InitReport:
    """What was loaded from the source and what was not; ``text()`` is the log block."""

    source: Source
    loaded: int = 0
    reinitialised: list[str] = dataclasses.field(default_factory=list)
    adapted: list[str] = dataclasses.field(default_factory=list)
    not_in_source: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    mismatches: list[str] = dataclasses.field(default_factory=list)  # raised, never logged

    def fit(self, path: Path, variable: nnx.Variable, found, model_class) -> np.ndarray | None:
        """The value for the target ``variable`` at ``path`` from the source's ``found`` one
        (None: keep the initial value), noting the decision."""
        shown = '.'.join(map(str, path))
        if found is None:
            self.not_in_source.append(shown)
            return None
        have, want = tuple(found.shape), tuple(variable.shape)
        if have == want:
            self.loaded += 1
            return np.asarray(found[...])
        if path[: len(model_class.HEAD)] == model_class.HEAD:
            self.reinitialised.append(f'{shown} {have}->{want}')
            return None
        if (
            path == (*model_class.INPUT_CONV, 'kernel')
            and have[:2] + have[3:] == want[:2] + want[3:]
        ):
            how = 'summed over' if want[2] == 1 else 'repeated and scaled from'
            self.adapted.append(
                f"{shown} {how} the source's {have[2]} input channels to {want[2]} "
                "(as timm's adapt_input_conv)"
            )
            self.loaded += 1
            return adapt_input_conv(np.asarray(found[...]), want[2])
        self.mismatches.append(f'{shown}: shape {have} in the source, {want} here')
        return None

    @property
    def record(self) -> dict[str, Any]:
        """The init source as the run records it (metadata and summary)."""
        return {**self.source.record, 'loaded': self.loaded, 'not_loaded': self.not_loaded}

    @property
    def not_loaded(self) -> list[str]:
        return self.reinitialised + self.not_in_source

    def text(self) -> str:
        lines = [f'Initialised from {self.source.describe()}: {self.loaded} arrays loaded.']
        lines += [f'  {note}' for note in self.notes]
        for what, names in (
            ('re-initialised (shape differs)', self.reinitialised),
            ('adapted', self.adapted),
            ('not in the source, left at their initial values', self.not_in_source),
            ('in the source but not in this model, unused', self.unused),
        ):
            if names:
                more = f' ... and {len(names) - SHOWN} more' if len(names) > SHOWN else ''
                lines.append(f'  {what}: {", ".join(names[:SHOWN])}{more}')
        return '\n'.join(lines)


def load_initial_variables(
    config: ml_collections.ConfigDict, params: nnx.State, batch_stats: nnx.State
) -> tuple[nnx.State, nnx.State, InitReport]:
    """``params`` and ``batch_stats`` (of a freshly initialised ``config.model``) with the
    ``init.source`` source's values wherever they fit; raises ``WeightsError``, having changed
    nothing, where they cannot."""
    source = read_source(init_source(config))
    if source.model != config.model:
        raise WeightsError(
            f'init.source={source.path}: holds {source.model} weights, but config.model is '
            f'{config.model!r}. Set --config.model={source.model}, or start from {config.model} '
            'weights.'
        )
    reader = convert.load_model if source.kind == 'weights' else _run_model
    model, _ = reader(source.path)
    model_class = type(model)
    report = InitReport(source)
    given = {
        name: dict(nnx.to_flat_state(nnx.state(model, kind)))
        for name, kind in (('params', nnx.Param), ('batch_stats', nnx.BatchStat))
    }
    size = config.input.center_crop or config.dataset.image_size
    results = []
    for name, target in (('params', params), ('batch_stats', batch_stats)):
        values = []
        for path, variable in nnx.to_flat_state(target):
            value = report.fit(path, variable, given[name].pop(path, None), model_class)
            values.append((path, variable if value is None else variable.copy(value)))
        results.append(nnx.from_flat_state(values))
        report.unused += ['.'.join(map(str, p)) for p in given[name]]
    if report.mismatches:
        raise WeightsError(_mismatch_message(source, config, size, report.mismatches))
    if report.reinitialised and source.num_classes != _num_classes(params, model_class):
        report.notes.append(
            f'the source has {source.num_classes} classes, this run '
            f'{_num_classes(params, model_class)}: its classifier head starts afresh.'
        )
    if source.image_size != size:
        report.notes.append(
            f'the source was trained at {source.image_size} px, this run uses {size}.'
        )
    return results[0], results[1], report


def _run_model(path: pathlib.Path) -> tuple[nnx.Module, dict[str, Any]]:
    run = checkpoint.load_run(path)
    return run.model, run.meta


def _num_classes(params: nnx.State, model_class) -> int:
    head = dict(nnx.to_flat_state(params))[(*model_class.HEAD, 'kernel')]
    return int(head.shape[-1])


def _mismatch_message(source: Source, config, size: int, mismatches: list[str]) -> str:
    if source.image_size != size:
        fix = (
            f'The source was trained at {source.image_size} px and this run uses {size} px, '
            f"which changes the shapes of {config.model}'s flatten layers: use "
            f'--config.dataset.image_size={source.image_size} (or input.center_crop).'
        )
    else:
        fix = 'Use the same config.model_kwargs as the source (widths, blocks ...).'
    listed = '\n  '.join(mismatches[:SHOWN])
    return (
        f'init.source={source.path}: {len(mismatches)} parameters of {config.model} do not fit '
        f'the source:\n  {listed}\n{fix}'
    )
