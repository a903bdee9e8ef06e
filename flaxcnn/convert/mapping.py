"""Filling a flaxcnn model from a PyTorch state dict, given which torch module each layer is.

A source layout (one module per layout in this package) only names, for every conv, BatchNorm
and linear layer of the flaxcnn model, the torch module that holds its weights (e.g.
``('blocks', 0, 'conv_bn1', 'conv') -> 'layer1.0.conv1'``). The tensors of each kind of layer
are converted here, the same for every layout:

  conv      weight (O, I/groups, H, W)  -> kernel (H, W, I/groups, O); bias -> bias
  linear    weight (out, in)            -> kernel (in, out);            bias -> bias
  batchnorm weight, bias, running_mean, running_var -> scale, bias, mean, var
            (``num_batches_tracked`` has no flaxcnn counterpart and is ignored)

Every expected key must be present with the expected shape and every key of the file used:
otherwise nothing is converted and the error lists the first mismatches.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Collection, Mapping
from typing import NamedTuple

import numpy as np
from flax import nnx

from flaxcnn.convert.files import WeightsError

IGNORED_SUFFIXES = ('num_batches_tracked',)
SHOWN_MISMATCHES = 10

ModulePath = tuple[str | int, ...]


class Layout(NamedTuple):
    """How one source names the weights of one flaxcnn model."""

    name: str  # recorded in weights.json, e.g. 'torchvision_resnet'
    model: str  # the flaxcnn registry name it fills
    description: str  # where such files come from, for messages
    first_conv: str  # torch module of the first conv: its weight gives the input channels
    classifier: str  # torch module of the classifier: its weight gives the class count
    module_names: Callable[[nnx.Module, Collection[str]], dict[ModulePath, str]]
    image_size: int = 224  # the input size the source network was trained at
    normalization: str = 'imagenet'


def _conv(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)


def _linear(weight: np.ndarray) -> np.ndarray:
    return weight.T


def _same(value: np.ndarray) -> np.ndarray:
    return value


# Per flaxcnn layer type: (flaxcnn variable, torch tensor suffix, conversion).
PARTS = {
    nnx.Conv: (('kernel', 'weight', _conv), ('bias', 'bias', _same)),
    nnx.Linear: (('kernel', 'weight', _linear), ('bias', 'bias', _same)),
    nnx.BatchNorm: (
        ('scale', 'weight', _same),
        ('bias', 'bias', _same),
        ('mean', 'running_mean', _same),
        ('var', 'running_var', _same),
    ),
}


def model_size(
    layout: Layout, tensors: Mapping[str, np.ndarray], source: pathlib.Path
) -> tuple[int, int]:
    """(class count, input channels) of the network in ``tensors``, read from its end layers."""
    sizes = []
    for module, axis in ((layout.classifier, 0), (layout.first_conv, 1)):
        weight = tensors.get(f'{module}.weight')
        if weight is None or weight.ndim <= axis:
            raise WeightsError(
                f'{source}: has no {module}.weight, so it is not a {layout.description} state dict '
                f'(found keys like {sorted(tensors)[:3]}). {_hint(layout, tensors)}'
            )
        sizes.append(int(weight.shape[axis]))
    return tuple(sizes)


def fill(
    model: nnx.Module, layout: Layout, tensors: Mapping[str, np.ndarray], source: pathlib.Path
) -> None:
    """Sets every parameter and BatchNorm statistic of ``model`` (abstract or not) from
    ``tensors``, or raises listing the mismatches and sets nothing."""
    names = layout.module_names(model, tensors.keys())
    used, wrong_shapes, missing, assignments = set(), [], [], []
    for path, module in nnx.iter_modules(model):
        parts = next((p for kind, p in PARTS.items() if isinstance(module, kind)), None)
        if parts is None:
            continue
        if path not in names:
            raise AssertionError(f'layout {layout.name} names no torch module for {path}')
        for attribute, suffix, convert in parts:
            variable = getattr(module, attribute, None)
            if variable is None:  # e.g. a conv without bias
                continue
            key = f'{names[path]}.{suffix}'
            expected = _torch_shape(tuple(variable.shape), convert)
            if key not in tensors:
                missing.append(f'missing {key} (expected shape {expected})')
                continue
            used.add(key)
            found = tuple(tensors[key].shape)
            if found != expected:
                wrong_shapes.append(f'{key}: shape {found}, expected {expected}')
                continue
            assignments.append((variable, convert(np.asarray(tensors[key], np.float32))))
    unexpected = [
        f'unexpected {key} (shape {tuple(tensors[key].shape)})'
        for key in sorted(tensors)
        if key not in used and not key.endswith(IGNORED_SUFFIXES)
    ]
    mismatches = wrong_shapes + missing + unexpected
    if mismatches:
        shown = '\n  '.join(mismatches[:SHOWN_MISMATCHES])
        more = len(mismatches) - SHOWN_MISMATCHES
        raise WeightsError(
            f"{source}: does not match flaxcnn's {layout.model} ({layout.description} layout): "
            f'{len(wrong_shapes)} wrong shapes, {len(missing)} missing and {len(unexpected)} '
            f'unexpected keys:\n  {shown}'
            + (f'\n  ... and {more} more' if more > 0 else '')
            + f'\n{_hint(layout, tensors)}'
        )
    for variable, value in assignments:
        variable.set_value(value)


def _torch_shape(shape: tuple[int, ...], convert) -> tuple[int, ...]:
    """The torch shape whose conversion has flaxcnn ``shape``, to report what was expected."""
    if convert is _conv:
        height, width, fan_in, out = shape
        return out, fan_in, height, width
    return shape[::-1] if convert is _linear else shape


def _hint(layout: Layout, tensors: Mapping[str, np.ndarray]) -> str:
    """What to do: another ``--model`` when another layout's end layers are in the file."""
    from flaxcnn.convert import LAYOUTS  # the registry of layouts imports this module

    fitting = [
        other.model
        for other in LAYOUTS.values()
        if other is not layout
        and f'{other.first_conv}.weight' in tensors
        and f'{other.classifier}.weight' in tensors
    ]
    if fitting:
        return f'It looks like {" or ".join(fitting)} weights: import it with --model={fitting[0]}.'
    known = '; '.join(f'{m} ({other.description})' for m, other in LAYOUTS.items())
    return f'Is it the weights of another architecture or variant? flaxcnn imports: {known}.'
