"""Per-layer summary of a model: output shape, trainable parameters and multiply-adds per layer.

Multiply-adds (MACs) are read off one traced forward pass in eval mode with the plain ops, so
every conv (depthwise included) and matmul counts as written, not as its fast reformulation:
``out_pixels * kernel_h * kernel_w * in_channels / groups * out_channels`` per conv. BN (foldable
into the convs), biases, activations, residual adds and pooling are not counted, the convention
of the published counts (torchvision's resnet50 4.09G, ProxylessNAS-GPU's 465M).

Flax's ``nnx.tabulate(..., compute_flops=True)`` is not used: it reports XLA's cost-analysis
flops (which include BN and activations and skip the padded taps), runs the model on real arrays
and compiles every module separately.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import jax
import jax.extend.core
import jax.numpy as jnp
from flax import nnx

from flaxcnn import ops

_SCOPE = 'flaxcnn_layer_'  # jax.named_scope of the i-th module call while tracing


class Layer(NamedTuple):
    """One module call: its path in the model, type, output shape, and the trainable parameters
    and MACs of the module itself (not of its submodules, which have rows of their own)."""

    path: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


def summarize(model: nnx.Module, input_shape: Sequence[int]) -> list[Layer]:
    """One ``Layer`` per module call of ``model`` (eval mode) on a batch of one ``input_shape``
    (H, W, C) image, in call order. Works on abstract models; ``model`` itself is left as it is.

    The rows' params and MACs add up to the model's totals: each parameter belongs to the module
    holding it (counted at its first call), each multiply-add to the innermost calling module.
    """
    graphdef, state = nnx.split(model)
    calls: list[tuple[str, str, tuple[int, ...]]] = []

    def forward(state, x):
        traced = nnx.merge(graphdef, state)
        traced.eval()
        with _recording_calls(traced, calls):
            return traced(x)

    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    with ops.use('plain'):  # convs as convs, not as their fast reformulations
        closed = jax.make_jaxpr(forward)(state, x)

    macs = [0] * len(calls)
    _add_macs(closed.jaxpr, macs, enclosing=0)
    params: dict[str, int] = {}
    for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        owner = '/'.join(map(str, path[:-1]))
        params[owner] = params.get(owner, 0) + leaf.size
    rows = []
    for (path, kind, shape), layer_macs in zip(calls, macs):
        rows.append(Layer(path, kind, shape, params.pop(path, 0), layer_macs))
    return rows


def count_macs(model: nnx.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of ``model`` (eval mode) on one ``input_shape`` (H, W, C) image."""
    return sum(layer.macs for layer in summarize(model, input_shape))


@contextlib.contextmanager
def _recording_calls(
    model: nnx.Module, calls: list[tuple[str, str, tuple[int, ...]]]
) -> Iterator[None]:
    """While active, each call of a module of ``model`` appends (path, type name, output shape)
    to ``calls`` and traces under ``jax.named_scope`` of its index, which ``_add_macs`` reads.

    NNX has no call hooks, so the module classes' ``__call__`` are wrapped and restored on exit
    (as ``nnx.tabulate`` does).
    """
    paths = {id(module): '/'.join(map(str, path)) for path, module in nnx.iter_modules(model)}
    classes = {type(module) for _, module in nnx.iter_modules(model)}
    active: list[int] = []  # ids of the modules being called, innermost last

    def wrap(call):
        def recorded(module, *args, **kwargs):
            if active and active[-1] == id(module):  # a subclass calling super().__call__
                return call(module, *args, **kwargs)
            index = len(calls)
            calls.append((paths.get(id(module), '?'), type(module).__name__, ()))
            active.append(id(module))
            try:
                with jax.named_scope(f'{_SCOPE}{index}'):
                    out = call(module, *args, **kwargs)
            finally:
                active.pop()
            calls[index] = (*calls[index][:2], tuple(out.shape))
            return out

        return recorded

    originals = {cls: cls.__dict__.get('__call__') for cls in classes}
    try:
        for cls in classes:
            cls.__call__ = wrap(cls.__call__)
        yield
    finally:
        for cls, original in originals.items():
            if original is None:
                del cls.__call__
            else:
                cls.__call__ = original


def _add_macs(jaxpr: jax.extend.core.Jaxpr, macs: list[int], enclosing: int) -> None:
    """Adds the multiply-adds of the convs and matmuls in ``jaxpr`` and its sub-jaxprs to
    ``macs[i]`` of the innermost module call ``i`` that traced them (``enclosing`` if none)."""
    for eqn in jaxpr.eqns:
        scopes = re.findall(rf'{_SCOPE}(\d+)', str(eqn.source_info.name_stack))
        layer = int(scopes[-1]) if scopes else enclosing
        if eqn.primitive.name == 'conv_general_dilated':
            out, rhs = eqn.outvars[0].aval.shape, eqn.invars[1].aval.shape
            out_features = rhs[eqn.params['dimension_numbers'].rhs_spec[0]]
            macs[layer] += math.prod(out) * math.prod(rhs) // out_features
        elif eqn.primitive.name == 'dot_general':
            out, lhs = eqn.outvars[0].aval.shape, eqn.invars[0].aval.shape
            (contracting, _), _ = eqn.params['dimension_numbers']
            macs[layer] += math.prod(out) * math.prod(lhs[axis] for axis in contracting)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            _add_macs(sub, macs, layer)


def format_table(layers: Sequence[Layer]) -> str:
    """``layers`` as a text table, one row per module call, with a totals row."""
    header = f'{"layer":<32} {"type":<16} {"output":<20} {"params":>12} {"MACs":>16}'
    lines = [header, '-' * len(header)]
    for layer in layers:
        lines.append(
            f'{layer.path or "(model)":<32} {layer.kind:<16} {str(layer.output_shape):<20} '
            f'{layer.params:>12,} {layer.macs:>16,}'
        )
    lines.append('-' * len(header))
    total_params = sum(layer.params for layer in layers)
    total_macs = sum(layer.macs for layer in layers)
    lines.append(f'{"total":<32} {"":<16} {"":<20} {total_params:>12,} {total_macs:>16,}')
    return '\n'.join(lines)
