"""The MIT HAN Lab ProxylessNAS key layout (``proxyless_gpu.pth``, torch hub
``mit-han-lab/ProxylessNAS``) onto flaxcnn's proxylessnas_gpu.

Their ``ProxylessNASNets`` holds ``first_conv`` (a ``ConvLayer``: ``conv``, ``bn``), ``blocks``
of ``MobileInvertedResidualBlock``, ``feature_mix_layer`` (a ``ConvLayer``) and ``classifier``
(a ``LinearLayer``: ``linear``). A block's ``mobile_inverted_conv`` is an
``MBInvertedConvLayer`` with ``inverted_bottleneck`` (absent at expansion 1), ``depth_conv``
and ``point_linear``, each ``conv`` + ``bn`` - or a ``ZeroLayer`` for a searched "skip" slot,
which has no weights; its shortcut (``IdentityLayer`` or none) has none either. flaxcnn leaves
the skip blocks out, so its blocks are the file's blocks that have weights, in index order.
Their hub file wraps the state dict as ``{'state_dict': ...}``; their BatchNorms use
epsilon 1e-3, as flaxcnn's proxylessnas_gpu does.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from flax import nnx

from flaxcnn.convert.mapping import Layout, ModulePath

_BLOCK_KEY = re.compile(r'blocks\.(\d+)\.mobile_inverted_conv\.')


def module_names(model: nnx.Module, keys: Collection[str]) -> dict[ModulePath, str]:
    """flaxcnn module path -> MIT HAN Lab module name, for every conv, BN and linear layer."""
    names = {('head',): 'classifier.linear'}
    for flax_name, torch_name in (('stem', 'first_conv'), ('head_conv', 'feature_mix_layer')):
        for part in ('conv', 'bn'):
            names[flax_name, 'conv_bn', part] = f'{torch_name}.{part}'
    weighted = sorted({int(m.group(1)) for key in keys if (m := _BLOCK_KEY.match(key))})
    # Blocks the file lacks get the next free indices, so the error names them as missing.
    start = weighted[-1] + 1 if weighted else 0
    weighted += range(start, start + len(model.blocks) - len(weighted))
    for position, (block, index) in enumerate(zip(model.blocks, weighted)):
        prefix = f'blocks.{index}.mobile_inverted_conv'
        parts = [('depthwise', 'conv_bn', 'depth_conv'), ('project', None, 'point_linear')]
        if block.expand is not None:
            parts.insert(0, ('expand', 'conv_bn', 'inverted_bottleneck'))
        for flax_name, inner, torch_name in parts:
            flax_path = ('blocks', position, flax_name) + ((inner,) if inner else ())
            for part in ('conv', 'bn'):
                names[flax_path + (part,)] = f'{prefix}.{torch_name}.{part}'
    return names


LAYOUT = Layout(
    name='mit_han_lab_proxylessnas',
    model='proxylessnas_gpu',
    description="the MIT HAN Lab's proxyless_gpu",
    first_conv='first_conv.conv',
    classifier='classifier.linear',
    module_names=module_names,
)
