"""The reference models one by one: basic_cnn, the ResNet family and ProxylessNAS-GPU built as
their references are (structure, init, multiply-adds), mostly from shape-only evaluation.

The registry, counts, shapes and modes of every model are in test_models.py.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxcnn import models
from flaxcnn.models import count_params, create_model, summary
from flaxcnn.models.proxylessnas import PROXYLESS_GPU_BLOCKS, MBConvSpec
from flaxcnn.models.resnet import BasicBlock, Bottleneck

from helpers_models import abstract_forward, modules_of, quick_rngs, reference_model


def build(name, **kwargs):
    """Shape-only model ``name``, 95 classes of 100x100 RGB images unless overridden."""
    return models.abstract_model(
        name, **{'num_classes': 95, 'in_channels': 3, 'image_size': 100, **kwargs}
    )


def test_reference_macs():
    # The published multiply-add counts: convs (depthwise included) and the classifier matmul.
    proxylessnas = summary.count_macs(reference_model('proxylessnas_gpu'), (224, 224, 3))
    assert abs(proxylessnas - 465.3e6) < 0.05e6  # the paper's 465M
    assert summary.count_macs(reference_model('resnet50'), (224, 224, 3)) == 4_089_184_256  # fvcore
    expected = (  # basic_cnn: four 3x3 convs at 100, 50, 25, 12 px, then 4608 x 625 x 131
        100 * 100 * 27 * 16
        + 50 * 50 * 144 * 32
        + 25 * 25 * 288 * 64
        + 12 * 12 * 576 * 128
        + 4608 * 625
        + 625 * 131
    )
    assert summary.count_macs(reference_model('basic_cnn'), (100, 100, 3)) == expected


# --- basic_cnn ---------------------------------------------------------------------------------


def test_basic_cnn_structure():
    model = reference_model('basic_cnn')
    convs = modules_of(model, nnx.Conv)
    assert [c.out_features for c in convs] == [16, 32, 64, 128]
    for conv in convs:
        assert conv.kernel_size == (3, 3) and conv.strides == (1, 1)
    assert model.hidden.in_features == 6 * 6 * 128 == 4_608
    assert model.hidden.out_features == 625 and model.dropout.rate == 0.5
    # (100, 60): heights 50, 25, 12, 6; widths 30, 15, 7, 3 (floor).
    assert build('basic_cnn', image_size=(100, 60)).hidden.in_features == 6 * 3 * 128
    model = build('basic_cnn', widths=(8, 16), hidden=32, dropout=0.25, image_size=20)
    assert [c.out_features for c in modules_of(model, nnx.Conv)] == [8, 16]
    assert model.hidden.in_features == 5 * 5 * 16 and model.hidden.out_features == 32
    assert model.dropout.rate == 0.25


def initial_params(name, **kwargs):
    """{path: value} of a real model's initial parameters."""
    model = create_model(name, num_classes=5, in_channels=3, rngs=quick_rngs(), **kwargs)
    state = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {'/'.join(map(str, path)): np.asarray(variable[...]) for path, variable in state}


def test_basic_cnn_init():
    params = initial_params('basic_cnn', image_size=32, widths=(4, 8))
    for linear, shape in (('hidden', (8 * 8 * 8, 625)), ('head', (625, 5))):
        kernel = np.asarray(params[f'{linear}/kernel'])
        bound = math.sqrt(6.0 / sum(shape))  # Xavier-uniform
        assert kernel.shape == shape
        assert bound * 0.98 < np.abs(kernel).max() <= bound
        assert abs(kernel.std() - bound / math.sqrt(3.0)) < 0.05 * bound
    biases = [value for path, value in params.items() if path.endswith('bias')]
    assert len(biases) == 4 and all(np.all(bias == 0) for bias in biases)


# --- the ResNet family -------------------------------------------------------------------------


def test_resnet50_structure():
    model = reference_model('resnet50')
    assert len(model.blocks) == 3 + 4 + 6 + 3
    assert all(isinstance(block, Bottleneck) for block in model.blocks)
    stage_starts = {0: 1, 3: 2, 7: 2, 13: 2}  # first block of each stage -> stride
    for index, block in enumerate(model.blocks):
        stride = stage_starts.get(index, 1)
        assert block.conv_bn1.conv.strides == (1, 1)
        assert block.conv_bn2.conv.strides == (stride, stride)  # v1.5: stride on the 3x3
        assert block.conv_bn3.conv.out_features == 4 * block.conv_bn1.conv.out_features
        assert (block.shortcut is not None) == (index in stage_starts)
    assert model.head.in_features == 2048


@pytest.mark.parametrize('name,blocks', [('resnet_lite_11', 1), ('resnet_lite_22', 2)])
def test_resnet_lite_structure(name, blocks):
    model = reference_model(name)
    assert model.stem.conv_bn.conv.out_features == 64
    assert len(model.blocks) == 2 * blocks
    assert all(isinstance(block, BasicBlock) for block in model.blocks)
    widths = [block.conv_bn2.conv.out_features for block in model.blocks]
    assert widths == [128] * blocks + [256] * blocks
    for index, block in enumerate(model.blocks):
        assert block.conv_bn1.conv.strides == (1, 1)  # stride-1 stages: the stem does all /4
        assert (block.shortcut is not None) == (index % blocks == 0)  # 64->128, 128->256
    assert model.head.in_features == 256


def test_resnet_block_counts_are_config():
    model = build('resnet50', blocks_per_stage=(1, 2), widths=(16, 32), stem_width=8)
    assert len(model.blocks) == 3 and model.head.in_features == 128
    assert abstract_forward(model, (1, 64, 64, 3), train=False).shape == (1, 95)
    with pytest.raises(ValueError, match="model 'resnet50': blocks_per_stage and widths"):
        build('resnet50', blocks_per_stage=(3, 4), widths=(64, 128, 256))


@pytest.mark.parametrize(
    'name,kwargs,zeroed',
    [
        ('resnet50', {'blocks_per_stage': (1, 1), 'widths': (4, 8), 'stem_width': 16}, 'conv_bn3'),
        ('resnet_lite_11', {'widths': (8, 8, 16)}, 'conv_bn2'),
    ],
)
def test_resnet_zero_init_residual(name, kwargs, zeroed):
    params = initial_params(name, image_size=8, zero_init_residual=True, **kwargs)
    scales = {path: value for path, value in params.items() if path.endswith('bn/scale')}
    # The stem, two blocks (the first with an identity shortcut, the second a projection).
    assert len(scales) == 1 + 2 * (2 if zeroed == 'conv_bn2' else 3) + 1
    for path, scale in scales.items():  # the last BN of each block starts at 0: block = shortcut
        np.testing.assert_array_equal(scale, 0.0 if f'/{zeroed}/' in path else 1.0)


# --- proxylessnas_gpu --------------------------------------------------------------------------


def test_proxylessnas_built_from_specs():
    model = reference_model('proxylessnas_gpu')
    assert len(model.blocks) == len(PROXYLESS_GPU_BLOCKS) == 14
    in_features = 40
    for block, spec in zip(model.blocks, PROXYLESS_GPU_BLOCKS):
        hidden = in_features * spec.expand
        assert (block.expand is None) == (spec.expand == 1)
        depthwise = block.depthwise.conv_bn.conv
        assert depthwise.feature_group_count == hidden == depthwise.in_features
        assert depthwise.kernel.shape == (spec.kernel, spec.kernel, 1, hidden)
        assert depthwise.strides == (spec.stride, spec.stride)
        assert block.project.conv.out_features == spec.out_channels
        assert block.residual == (spec.stride == 1 and in_features == spec.out_channels)
        in_features = spec.out_channels
    assert sum(block.residual for block in model.blocks) == 7
    assert model.head_conv.conv_bn.conv.out_features == 1728
    assert model.head.in_features == 1728 and model.dropout.rate == 0.0


def test_proxylessnas_removing_a_block_removes_its_params_and_macs():
    full = reference_model('proxylessnas_gpu')
    index = PROXYLESS_GPU_BLOCKS.index(MBConvSpec(128, 3, 3))  # 128 -> 128, stride 1, at 14 px
    hidden = 128 * 3
    block_params = 128 * hidden + 9 * hidden + hidden * 128 + 2 * (hidden + hidden + 128)
    assert count_params(full.blocks[index]) == block_params
    specs = PROXYLESS_GPU_BLOCKS[:index] + PROXYLESS_GPU_BLOCKS[index + 1 :]
    variant = build('proxylessnas_gpu', num_classes=1000, image_size=224, blocks=specs)
    assert len(variant.blocks) == len(PROXYLESS_GPU_BLOCKS) - 1
    assert count_params(full) - count_params(variant) == block_params
    block_macs = 14 * 14 * (128 * hidden + 9 * hidden + hidden * 128)
    macs = summary.count_macs(full, (224, 224, 3)) - summary.count_macs(variant, (224, 224, 3))
    assert macs == block_macs


def test_proxylessnas_specs_as_plain_tuples():
    specs = ((16, 3, 1), (24, 5, 3, 2), (24, 3, 6))  # as a config file would give them
    model = build('proxylessnas_gpu', blocks=specs, stem_channels=8, head_channels=64)
    assert [block.project.conv.out_features for block in model.blocks] == [16, 24, 24]
    assert [block.residual for block in model.blocks] == [False, False, True]
    assert abstract_forward(model, (1, 32, 32, 3), train=False).shape == (1, 95)
