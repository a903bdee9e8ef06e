"""Tests for basic_cnn, resnet50 and proxylessnas_gpu (shape-only evaluation for the big ones)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxcnn import models
from flaxcnn.models import count_params, create_model, model_names, proxylessnas
from flaxcnn.models.__main__ import count_macs as traced_macs
from flaxcnn.models.__main__ import main as cli_main
from flaxcnn.models.proxylessnas import PROXYLESS_GPU_BLOCKS, MBConvSpec

from test_models import abstract_forward

# (name, num_classes, in_channels, image_size) -> trainable parameters of the reference models.
REFERENCE_PARAMS = {
    ('basic_cnn', 131, 3, 100): 3_060_071,
    ('resnet50', 1000, 3, 224): 25_557_032,  # torchvision resnet50
    ('proxylessnas_gpu', 1000, 3, 224): 7_119_848,  # official proxyless_gpu
}
ZOO = ('basic_cnn', 'proxylessnas_gpu', 'resnet50')


# Shape-only models at this file's reference setting (overridable per call).
abstract_model = functools.partial(
    models.abstract_model, num_classes=95, in_channels=3, image_size=100
)


def modules_of(model, kind):
    """All submodules of ``model`` that are instances of ``kind``, in graph order."""
    return [m for _, m in nnx.iter_modules(model) if isinstance(m, kind)]


def test_registered():
    assert set(ZOO) <= set(model_names())


@pytest.mark.parametrize('key', sorted(REFERENCE_PARAMS))
def test_exact_param_counts(key):
    name, num_classes, in_channels, image_size = key
    model = abstract_model(
        name, num_classes=num_classes, in_channels=in_channels, image_size=image_size
    )
    assert count_params(model) == REFERENCE_PARAMS[key]


@pytest.mark.parametrize('name', ZOO)
def test_output_shapes_at_100(name):
    model = abstract_model(name, image_size=100)
    out = abstract_forward(model, (2, 100, 100, 3), rngs=jax.random.key(0))  # train mode
    assert out.shape == (2, 95) and out.dtype == jnp.float32
    model.eval()
    out = abstract_forward(model, (2, 100, 100, 3))
    assert out.shape == (2, 95) and out.dtype == jnp.float32


@pytest.mark.parametrize('name', ['proxylessnas_gpu', 'resnet50'])
def test_output_shapes_at_224(name):
    model = abstract_model(name, image_size=224)
    model.eval()
    out = abstract_forward(model, (2, 224, 224, 3))
    assert out.shape == (2, 95) and out.dtype == jnp.float32


@pytest.mark.parametrize('name', ZOO)
def test_only_params_and_batch_stats(name):
    model = abstract_model(name)
    _, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    assert len(jax.tree.leaves(rest)) == 0 and jax.tree.leaves(params)
    has_batch_norm = name != 'basic_cnn'
    assert bool(jax.tree.leaves(batch_stats)) == has_batch_norm


# --- basic_cnn ---------------------------------------------------------------------------------


def test_basic_cnn_structure():
    model = abstract_model('basic_cnn', num_classes=131)
    convs = modules_of(model, nnx.Conv)
    assert [c.out_features for c in convs] == [16, 32, 64, 128]
    for conv in convs:
        assert conv.kernel_size == (3, 3) and conv.strides == (1, 1)
        assert conv.padding == ((1, 1), (1, 1))
        assert conv.bias is not None
    assert model.hidden.in_features == 6 * 6 * 128 == 4_608
    assert model.hidden.out_features == 625 and model.dropout.rate == 0.5


def test_basic_cnn_flatten_size_follows_image_size():
    assert abstract_model('basic_cnn', image_size=64).hidden.in_features == 4 * 4 * 128
    # (100, 60): heights 50, 25, 12, 6; widths 30, 15, 7, 3 (floor).
    model = abstract_model('basic_cnn', image_size=(100, 60))
    assert model.hidden.in_features == 6 * 3 * 128
    model.eval()
    assert abstract_forward(model, (1, 100, 60, 3)).shape == (1, 95)
    with pytest.raises(ValueError, match='too small'):
        abstract_model('basic_cnn', image_size=15)


def test_basic_cnn_kwargs():
    model = abstract_model('basic_cnn', widths=(8, 16), hidden=32, dropout=0.25, image_size=20)
    assert [c.out_features for c in modules_of(model, nnx.Conv)] == [8, 16]
    assert model.hidden.in_features == 5 * 5 * 16 and model.hidden.out_features == 32
    assert model.dropout.rate == 0.25


@pytest.fixture(scope='module')
def small_basic_cnn():
    """A real basic_cnn on 32x32x3 inputs (flatten 2 * 2 * 128 = 512), cheap enough to compute."""
    return create_model('basic_cnn', num_classes=5, in_channels=3, image_size=32, rngs=nnx.Rngs(0))


def test_basic_cnn_linear_xavier_uniform_init(small_basic_cnn):
    model = small_basic_cnn
    assert (model.hidden.in_features, model.hidden.out_features) == (512, 625)
    for linear in (model.hidden, model.head):
        kernel = np.asarray(linear.kernel[...])
        bound = math.sqrt(6.0 / (linear.in_features + linear.out_features))
        assert np.abs(kernel).max() <= bound
        assert np.abs(kernel).max() > 0.98 * bound
        assert abs(kernel.std() - bound / math.sqrt(3.0)) < 0.05 * bound
        np.testing.assert_array_equal(linear.bias[...], 0.0)
    for conv in modules_of(model, nnx.Conv):
        np.testing.assert_array_equal(conv.bias[...], 0.0)


def test_basic_cnn_dropout_active_in_train_off_in_eval(small_basic_cnn):
    model = small_basic_cnn
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    forward = nnx.jit(lambda m, key: m(x, rngs=key))
    features = jnp.ones((8, 625))

    model.train()
    out_a = forward(model, jax.random.key(1))
    assert not np.allclose(out_a, forward(model, jax.random.key(2)))  # dropout draws from the key
    np.testing.assert_array_equal(out_a, forward(model, jax.random.key(1)))
    dropped = np.asarray(model.dropout(features, rngs=jax.random.key(3)))
    assert set(np.unique(dropped)) == {0.0, 2.0} and 0.4 < np.mean(dropped == 0) < 0.6

    model.eval()
    try:
        out_eval = forward(model, jax.random.key(1))
        np.testing.assert_array_equal(out_eval, forward(model, jax.random.key(2)))
        np.testing.assert_array_equal(model.dropout(features, rngs=jax.random.key(3)), features)
        assert not np.allclose(out_a, out_eval)
    finally:
        model.train()


# --- resnet50 ----------------------------------------------------------------------------------


def test_resnet50_structure():
    model = abstract_model('resnet50', num_classes=1000, image_size=224)
    assert len(model.blocks) == 3 + 4 + 6 + 3
    stage_starts = {0: 1, 3: 2, 7: 2, 13: 2}  # first block of each stage -> stride
    for index, block in enumerate(model.blocks):
        stride = stage_starts.get(index, 1)
        assert block.conv_bn1.conv.strides == (1, 1)
        assert block.conv_bn2.conv.strides == (stride, stride)  # v1.5: stride on the 3x3
        assert block.conv_bn3.conv.out_features == 4 * block.conv_bn1.conv.out_features
        assert (block.shortcut is not None) == (index in stage_starts)
    assert model.head.in_features == 2048


def test_resnet_block_counts_are_config():
    model = abstract_model('resnet50', blocks_per_stage=(1, 2), widths=(16, 32), stem_width=8)
    assert len(model.blocks) == 3 and model.head.in_features == 128
    model.eval()
    assert abstract_forward(model, (1, 64, 64, 3)).shape == (1, 95)
    with pytest.raises(ValueError):
        abstract_model('resnet50', blocks_per_stage=(3, 4), widths=(64, 128, 256))


def test_resnet_zero_init_residual():
    kwargs = {
        'num_classes': 10,
        'in_channels': 3,
        'blocks_per_stage': (1,),
        'widths': (4,),
        'stem_width': 16,  # 16 -> 4 -> 16 channels at stride 1: identity shortcut
    }

    @jax.jit  # one compilation for both initialisations and the block's forward pass
    def init_and_run(x):
        scales = {}
        for zero_init_residual in (False, True):
            model = create_model(
                'resnet50', rngs=nnx.Rngs(0), zero_init_residual=zero_init_residual, **kwargs
            )
            last_bn = model.blocks[0].conv_bn3.bn
            scales[zero_init_residual] = [
                (bn is last_bn, bn.scale[...], bn.bias[...])
                for bn in modules_of(model, nnx.BatchNorm)
            ]
        block = model.blocks[0]
        assert block.shortcut is None
        block.eval()
        return scales, block(x)

    x = jnp.abs(jax.random.normal(jax.random.key(0), (2, 8, 8, 16)))
    scales, out = init_and_run(x)
    for zero_init_residual, bns in scales.items():
        assert len(bns) == 4 and sum(is_last for is_last, _, _ in bns) == 1  # stem + 3
        for is_last, scale, bias in bns:
            np.testing.assert_array_equal(scale, 0.0 if zero_init_residual and is_last else 1.0)
            np.testing.assert_array_equal(bias, 0.0)
    np.testing.assert_array_equal(out, x)  # the zero-init block starts as ReLU(x) = x


def test_resnet50_zero_init_residual_abstract_count():
    model = abstract_model('resnet50', num_classes=1000, zero_init_residual=True)
    assert count_params(model) == 25_557_032


# --- proxylessnas_gpu --------------------------------------------------------------------------


def test_proxylessnas_built_from_specs():
    model = abstract_model('proxylessnas_gpu', num_classes=1000, image_size=224)
    assert len(model.blocks) == len(PROXYLESS_GPU_BLOCKS) == 14
    in_features = 40
    for block, spec in zip(model.blocks, PROXYLESS_GPU_BLOCKS):
        hidden = in_features * spec.expand
        assert (block.expand is None) == (spec.expand == 1)
        depthwise = block.depthwise.conv_bn.conv
        assert depthwise.feature_group_count == hidden == depthwise.in_features
        assert depthwise.out_features == hidden
        assert depthwise.kernel.shape == (spec.kernel, spec.kernel, 1, hidden)
        assert depthwise.strides == (spec.stride, spec.stride)
        assert depthwise.padding == ((spec.kernel // 2,) * 2,) * 2
        assert block.project.conv.out_features == spec.out_channels
        assert block.residual == (spec.stride == 1 and in_features == spec.out_channels)
        in_features = spec.out_channels
    assert sum(block.residual for block in model.blocks) == 7
    assert model.head_conv.conv_bn.conv.out_features == 1728
    assert model.head.in_features == 1728 and model.dropout.rate == 0.0
    for bn in modules_of(model, nnx.BatchNorm):
        assert bn.epsilon == 1e-3 and bn.momentum == 0.9
    for conv in modules_of(model, nnx.Conv):
        assert conv.bias is None


def test_proxylessnas_removing_a_block_removes_its_params():
    full = abstract_model('proxylessnas_gpu', num_classes=1000)
    index = PROXYLESS_GPU_BLOCKS.index(MBConvSpec(128, 3, 3))  # 128 -> 128, stride 1
    hidden = 128 * 3
    block_params = 128 * hidden + 9 * hidden + hidden * 128 + 2 * (hidden + hidden + 128)
    assert count_params(full.blocks[index]) == block_params
    variant_specs = PROXYLESS_GPU_BLOCKS[:index] + PROXYLESS_GPU_BLOCKS[index + 1 :]
    variant = abstract_model('proxylessnas_gpu', num_classes=1000, blocks=variant_specs)
    assert len(variant.blocks) == len(PROXYLESS_GPU_BLOCKS) - 1
    assert count_params(full) - count_params(variant) == block_params
    block_macs = 14 * 14 * (128 * hidden + 9 * hidden + hidden * 128)
    assert proxylessnas.count_macs() - proxylessnas.count_macs(variant_specs) == block_macs


def test_proxylessnas_specs_as_plain_tuples():
    specs = ((16, 3, 1), (24, 5, 3, 2), (24, 3, 6))  # as a config file would give them
    model = abstract_model('proxylessnas_gpu', blocks=specs, stem_channels=8, head_channels=64)
    assert [block.project.conv.out_features for block in model.blocks] == [16, 24, 24]
    assert [block.residual for block in model.blocks] == [False, False, True]
    model.eval()
    assert abstract_forward(model, (1, 32, 32, 3)).shape == (1, 95)


def test_proxylessnas_macs():
    macs = proxylessnas.count_macs()
    assert abs(macs - 465.3e6) < 0.1e6
    # The analytic count from the specs equals the convs + matmuls of the traced forward pass.
    assert macs == traced_macs('proxylessnas_gpu', num_classes=1000, in_channels=3, image_size=224)
    assert proxylessnas.count_macs(image_size=100, num_classes=95) == traced_macs(
        'proxylessnas_gpu', num_classes=95, in_channels=3, image_size=100
    )


def test_traced_macs_of_other_models():
    # torchvision resnet50's conv + fc multiply-adds (fvcore's 4.09G).
    assert traced_macs('resnet50', num_classes=1000, in_channels=3, image_size=224) == 4_089_184_256
    # basic_cnn: convs 4.32M + 11.52M + 11.52M + 10.62M, then 4608 x 625 and 625 x 131.
    expected = (
        100 * 100 * 27 * 16
        + 50 * 50 * 144 * 32
        + 25 * 25 * 288 * 64
        + 12 * 12 * 576 * 128
        + 4608 * 625
        + 625 * 131
    )
    assert traced_macs('basic_cnn', num_classes=131, in_channels=3, image_size=100) == expected


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_lists_all_models(capsys):
    cli_main(['--num-classes', '131', '--in-channels', '3', '--image-size', '100'])
    rows = {
        line.split()[0]: line.split()
        for line in capsys.readouterr().out.splitlines()
        if line and line[0] != '#'
    }
    assert set(model_names()) <= set(rows)
    assert rows['basic_cnn'][1] == '3,060,071'
    for name in model_names():
        assert ' '.join(rows[name][2:]) == '(1, 131)'


def test_cli_macs_column(capsys):
    cli_main(['--num-classes', '1000', '--in-channels', '3', '--image-size', '224', '--macs'])
    rows = {
        line.split()[0]: line.split()
        for line in capsys.readouterr().out.splitlines()
        if line and line[0] != '#'
    }
    assert rows['model'] == ['model', 'params', 'MACs', 'output']
    assert rows['proxylessnas_gpu'][1:] == ['7,119,848', '465.3M', '(1,', '1000)']
    assert rows['resnet50'][1:] == ['25,557,032', '4,089.2M', '(1,', '1000)']
