"""torchvision's ResNet-50 key layout, which timm's ``resnet50`` shares, onto flaxcnn's resnet50.

torchvision (``resnet50-0676ba61.pth`` = IMAGENET1K_V1, ``resnet50-11ad3fa6.pth`` = V2, or any
``torch.save(model.state_dict())``): ``conv1``/``bn1`` stem, ``layer{1..4}.{block}`` bottlenecks
with ``conv1..3``/``bn1..3`` and a ``downsample.0`` (conv) / ``downsample.1`` (BN) projection in
each layer's first block, ``fc`` classifier. timm's ``resnet50`` (its 'b' variant, the
torchvision one) names every weight the same: its extra modules (``act1``, ``drop_block``,
``aa``, ``se``) hold no parameters, and its HF hub files (``model.safetensors``) carry no
prefix. timm's 'c'/'d'/'e'/'s'/'t' variants (``resnet50d`` ...) are other architectures (deep
stem ``conv1.0``..., average-pool projection ``downsample.1``/``.2``) and are refused.
"""

from __future__ import annotations

from collections.abc import Collection

from flax import nnx

from flaxcnn.convert.mapping import Layout, ModulePath


def module_names(model: nnx.Module, keys: Collection[str]) -> dict[ModulePath, str]:
    """flaxcnn module path -> torchvision module name, for every conv, BN and linear layer."""
    del keys  # the model alone fixes the names
    names = {
        ('stem', 'conv_bn', 'conv'): 'conv1',
        ('stem', 'conv_bn', 'bn'): 'bn1',
        ('head',): 'fc',
    }
    layer, index = 0, 0
    for position, block in enumerate(model.blocks):
        # Both libraries give a block a projection exactly when its stride or width changes,
        # which is each layer's first block: so a projection starts the next torchvision layer.
        if block.shortcut is not None:
            layer, index = layer + 1, 0
        torch_block = f'layer{layer}.{index}'
        for k in (1, 2, 3):
            names['blocks', position, f'conv_bn{k}', 'conv'] = f'{torch_block}.conv{k}'
            names['blocks', position, f'conv_bn{k}', 'bn'] = f'{torch_block}.bn{k}'
        if block.shortcut is not None:
            names['blocks', position, 'shortcut', 'conv'] = f'{torch_block}.downsample.0'
            names['blocks', position, 'shortcut', 'bn'] = f'{torch_block}.downsample.1'
        index += 1
    return names


LAYOUT = Layout(
    name='torchvision_resnet',
    model='resnet50',
    description="torchvision's or timm's resnet50",
    first_conv='conv1',
    classifier='fc',
    module_names=module_names,
)
