"""flaxcnn.models: registry, exact parameter counts, shapes, the image-size rule, train/eval
modes, the shared layers; then each reference model built as its reference is (basic_cnn, the
ResNet family, ProxylessNAS-GPU: structure, init), mostly from shape-only evaluation; then the
per-layer summary, the multiply-add counts and the command line."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxcnn import models
from flaxcnn.models import count_params, create_model, layers, model_names, register, summary
from flaxcnn.models import __main__ as cli
from flaxcnn.models.proxylessnas import PROXYLESS_GPU_BLOCKS, MBConvSpec
from flaxcnn.models.resnet import BasicBlock, Bottleneck
from flaxcnn.ops import geometry

from helpers_models import (
    REFERENCE,
    abstract_forward,
    modules_of,
    quick_key,
    quick_rngs,
    reference_model,
)

GLOBAL_POOL = ('proxylessnas_gpu', 'resnet50', 'resnet_lite_11', 'resnet_lite_22')


def build(name, **kwargs):
    """Shape-only model ``name``, 7 classes of 2-channel images unless overridden."""
    return models.abstract_model(name, **{'num_classes': 7, 'in_channels': 2, **kwargs})


# --- registry and counts -----------------------------------------------------------------------


def test_registry_names():
    assert model_names() == sorted(REFERENCE)


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_exact_param_counts(name):
    assert count_params(reference_model(name)) == REFERENCE[name][-1]


def test_unknown_model_lists_names():
    with pytest.raises(ValueError) as excinfo:
        create_model('resnet_9000', num_classes=52, in_channels=1, rngs=nnx.Rngs(0))
    message = str(excinfo.value)
    assert 'resnet_9000' in message and all(name in message for name in REFERENCE)


def test_duplicate_registration_rejected():
    with pytest.raises(ValueError, match='already registered'):
        register('mynet_v1')(lambda **kwargs: None)
    assert model_names() == sorted(REFERENCE)


def test_factory_kwargs_tune_model():
    model = build('mynet_v2', image_size=90, widths=(16, 32, 64), dropout=0.2)
    assert model.dropout.rate == 0.2
    assert model.head.in_features == 6 * 6 * 64
    assert model.stem.conv_bn.conv.out_features == 16
    resnet = build('resnet_lite_11', widths=(32, 64, 96))
    assert resnet.stem.conv_bn.conv.out_features == 32 and resnet.head.in_features == 96
    with pytest.raises(TypeError):
        build('resnet_lite_11', dropout=0.5)
    with pytest.raises(ValueError, match="model 'resnet_lite_22': widths needs a stem width"):
        build('resnet_lite_22', widths=(64,))


# --- shapes and the image-size rule ------------------------------------------------------------


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_output_shapes(name):
    if name in GLOBAL_POOL:  # built once for any image size: try a non-square one and 1 pixel
        model, calls = reference_model(name), [((75, 64), True), ((1, 1), False)]
        num_classes, in_channels = REFERENCE[name][:2]
    else:
        model, calls = build(name, image_size=(75, 64)), [((75, 64), True), ((75, 64), False)]
        num_classes, in_channels = 7, 2
    for size, train in calls:
        out = abstract_forward(model, (2, *size, in_channels), train=train)
        assert out.shape == (2, num_classes) and out.dtype == jnp.float32


@pytest.mark.parametrize(
    'name,image_size,head_in_features',
    [
        ('mynet_v1', 90, 12 * 12 * 128),  # 90 -> stem 23 -> stage 12
        ('mynet_v2', 90, 6 * 6 * 128),  # ... -> stage 6
        ('mynet_v1', (90, 64), 12 * 8 * 128),  # (90, 64) -> stem (23, 16) -> stage (12, 8)
    ],
)
def test_flatten_head_sized_from_image_size(name, image_size, head_in_features):
    assert build(name, image_size=image_size).head.in_features == head_in_features


@pytest.mark.parametrize('name', sorted(REFERENCE))
@pytest.mark.parametrize('image_size', [0, (90,), (90, -1), 'large'])
def test_malformed_image_size_rejected(name, image_size):
    with pytest.raises(ValueError, match=rf"model '{name}': image_size must be S or \(H, W\)"):
        build(name, image_size=image_size)


def test_image_too_small_names_model_and_minimum():
    # basic_cnn's four 2x2/2 pools need 16 pixels a side; the error says so instead of a
    # zero-sized flatten.
    with pytest.raises(ValueError, match=r"model 'basic_cnn': .* needs at least 16x16 pixels"):
        build('basic_cnn', image_size=(100, 15))
    with pytest.raises(ValueError, match='needs at least 4x4 pixels'):
        build('basic_cnn', image_size=3, widths=(8, 8))
    assert build('basic_cnn', image_size=16).hidden.in_features == 128


def test_global_pool_models_accept_any_positive_size():
    # Every conv and pool of these models pads k // 2, so even one pixel survives.
    assert build('resnet_lite_11', image_size=1, widths=(4, 8)).head.in_features == 8
    specs = ((8, 3, 1), (16, 5, 3, 2))
    assert len(build('proxylessnas_gpu', image_size=1, blocks=specs).blocks) == 2


def test_feature_map_size_follows_the_layers():
    for size in (90, 45, 23, 64, 33, 1):
        for kernel, stride in ((7, 2), (3, 2), (1, 2), (3, 1)):
            conv = nnx.eval_shape(lambda: layers.conv(2, 4, kernel, stride, rngs=nnx.Rngs(0)))
            x = jax.ShapeDtypeStruct((1, size, size + 1, 2), jnp.float32)
            out = nnx.eval_shape(lambda m, x: m(x), conv, x)
            step = layers.conv_step(kernel, stride)
            assert out.shape[1:3] == layers.feature_map_size((size, size + 1), [step])
    stem = nnx.eval_shape(lambda: layers.Stem(1, 8, rngs=nnx.Rngs(0)))
    out = nnx.eval_shape(lambda m, x: m(x), stem, jax.ShapeDtypeStruct((1, 90, 90, 1), jnp.float32))
    assert out.shape == (1, 23, 23, 8)
    assert layers.feature_map_size(90, layers.Stem.steps) == (23, 23)


# --- state and init ----------------------------------------------------------------------------


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_only_params_and_batch_stats(name):
    model = reference_model(name)
    for set_mode in (model.train, model.eval):
        set_mode()
        _, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        assert not jax.tree.leaves(rest) and jax.tree.leaves(params)
        assert bool(jax.tree.leaves(batch_stats)) == (name != 'basic_cnn')
    for bn in modules_of(model, nnx.BatchNorm):  # torch momentum 0.1
        assert bn.momentum == 0.9
        assert bn.epsilon == (1e-3 if name == 'proxylessnas_gpu' else 1e-5)
    for conv in modules_of(model, nnx.Conv):
        kh, kw = conv.kernel_size
        # torch's k // 2 (nnx.Conv's own default is 'SAME'): built by layers.conv, Kaiming init
        assert conv.padding == ((kh // 2, kh // 2), (kw // 2, kw // 2))
        assert (conv.bias is not None) == (name == 'basic_cnn')


def test_kaiming_fan_out_init():
    conv = layers.conv(64, 128, 3, rngs=quick_rngs())
    kernel = np.asarray(conv.kernel[...])
    assert kernel.shape == (3, 3, 64, 128)
    expected_std = math.sqrt(2.0 / (128 * 3 * 3))  # fan_out = out_channels * kh * kw
    assert abs(kernel.std() - expected_std) / expected_std < 0.03
    assert abs(kernel.mean()) < 0.05 * expected_std
    # Untruncated normal (torch kaiming_normal_): values beyond 2 std do occur (~4.6%).
    assert 0.03 < np.mean(np.abs(kernel) > 2 * expected_std) < 0.065
    assert conv.bias is None


def test_batch_norm_init_and_momentum_match_torch():
    bn = layers.batch_norm(4, rngs=nnx.Rngs(0))
    for variable, value in ((bn.scale, 1.0), (bn.bias, 0.0), (bn.mean, 0.0), (bn.var, 1.0)):
        np.testing.assert_array_equal(variable[...], value)
    np.testing.assert_array_equal(layers.batch_norm(4, zero_scale=True, rngs=nnx.Rngs(0)).scale, 0)
    x = 3.0 + 2.0 * jax.random.normal(quick_key(0), (8, 5, 5, 4))
    bn(x)
    # torch momentum 0.1: running = 0.9 * running + 0.1 * batch statistic
    np.testing.assert_allclose(bn.mean[...], 0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * x.var(axis=(0, 1, 2)), rtol=1e-4)


def _torch_max_pool_reference(x, window, stride, padding):
    """NumPy max-pool with torch.nn.MaxPool2d semantics (-inf padding, floor mode), NHWC."""
    n, h, w, c = x.shape
    padded = np.full((n, h + 2 * padding, w + 2 * padding, c), -np.inf, dtype=x.dtype)
    padded[:, padding : padding + h, padding : padding + w] = x
    out_h = geometry.output_size(h, window, stride, padding)
    out_w = geometry.output_size(w, window, stride, padding)
    out = np.empty((n, out_h, out_w, c), dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            patch = padded[:, i * stride : i * stride + window, j * stride : j * stride + window]
            out[:, i, j] = patch.max(axis=(1, 2))
    return out


@pytest.mark.parametrize(
    'shape,window,stride,padding',
    [((2, 45, 45, 3), 3, 2, 1), ((1, 12, 11, 2), 3, 2, 1), ((1, 9, 9, 1), 2, 2, 0)],
)
def test_max_pool_matches_torch_semantics(shape, window, stride, padding):
    x = np.random.default_rng(0).uniform(-5.0, -1.0, size=shape).astype(np.float32)  # all negative
    out = np.asarray(layers.max_pool(jnp.asarray(x), window, stride, padding))
    np.testing.assert_array_equal(out, _torch_max_pool_reference(x, window, stride, padding))
    assert np.all(out < 0)  # padding must never leak zeros into the output


# --- train and eval modes on a real model -------------------------------------------------------


@nnx.jit
def _forward(model, x, key):
    return model(x, rngs=key)


def test_modes_batch_stats_and_dropout():
    # A real, narrow mynet_v2 (BN and dropout 0.4) on 32x32x1 images.
    model = create_model(
        'mynet_v2', num_classes=5, in_channels=1, image_size=32, rngs=quick_rngs(), widths=(8, 8, 8)
    )
    x = jax.random.normal(quick_key(0), (4, 32, 32, 1))
    stats = lambda: jax.tree.map(np.array, jax.tree.leaves(nnx.state(model, nnx.BatchStat)))
    initial = stats()

    model.train()
    out_a = _forward(model, x, quick_key(1))
    assert all(not np.allclose(a, b) for a, b in zip(initial, stats()))
    assert not np.allclose(out_a, _forward(model, x, quick_key(2)))  # dropout: call-time key

    trained = stats()
    model.eval()
    out_eval = _forward(model, x, quick_key(1))
    np.testing.assert_array_equal(out_eval, _forward(model, x, quick_key(2)))  # no dropout
    for before, after in zip(trained, stats()):
        np.testing.assert_array_equal(before, after)  # eval leaves the running stats alone

    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    merged = nnx.merge(graphdef, params, batch_stats)
    np.testing.assert_array_equal(_forward(merged, x, quick_key(1)), out_eval)
    assert count_params(model) == sum(leaf.size for leaf in jax.tree.leaves(params))
    model.train()


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
    assert abstract_forward(model, (1, 64, 64, 2), train=False).shape == (1, 7)
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
    variant = build(
        'proxylessnas_gpu', num_classes=1000, in_channels=3, image_size=224, blocks=specs
    )
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
    assert abstract_forward(model, (1, 32, 32, 2), train=False).shape == (1, 7)


# --- per-layer summary, multiply-adds and the command line -------------------------------------


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


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_summary_rows_add_up_to_the_model(name):
    num_classes, in_channels, image_size, params = REFERENCE[name]
    model = reference_model(name)
    rows = summary.summarize(model, (image_size, image_size, in_channels))
    assert rows[0].path == '' and rows[0].output_shape == (1, num_classes)
    assert sum(row.params for row in rows) == params == count_params(model)
    modules = dict(nnx.iter_modules(model))
    for row in rows:
        module = modules[tuple(int(p) if p.isdigit() else p for p in row.path.split('/') if p)]
        assert row.kind == type(module).__name__
        if isinstance(module, nnx.Conv):  # out pixels x taps x in channels per group x out
            kernel = module.kernel.shape
            assert row.macs == math.prod(row.output_shape) * math.prod(kernel[:3])
        elif isinstance(module, nnx.Linear):
            assert row.macs == math.prod(row.output_shape) * module.in_features
        else:
            assert row.macs == 0
    assert summary.count_macs(model, (image_size, image_size, in_channels)) == sum(
        row.macs for row in rows
    )


def test_cli_model_table(capsys):
    cli.main(['--model', 'resnet_lite_11', '--num-classes', '10', '--image-size', '32'])
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[3:-2]}
    assert rows['(model)'][1:] == ['ResNet', '(1,', '10)', '0', '0']
    assert rows['stem/conv_bn/conv'][1:5] == ['Conv', '(1,', '16,', '16,']  # 32 -> 16
    assert rows['blocks/0/shortcut/conv'][-2:] == [f'{64 * 128:,}', f'{8 * 8 * 64 * 128:,}']
    model = build('resnet_lite_11', num_classes=10, in_channels=1, image_size=32)
    macs = summary.count_macs(model, (32, 32, 1))
    assert lines[-1].split() == ['total', f'{count_params(model):,}', f'{macs:,}']
    with pytest.raises(SystemExit):
        cli.main(['--model', 'basic_cnn', '--image-size', '12'])
    assert "model 'basic_cnn': image_size 12 is too small" in capsys.readouterr().err


def test_cli_zoo_table(capsys, monkeypatch):
    shown = ['basic_cnn', 'mynet_v2', 'resnet_lite_11']  # the big ones cost time, test nothing new
    monkeypatch.setattr(cli, 'model_names', lambda: shown)
    cli.main(['--macs'])  # 52 classes of 90x90 grey images
    rows = {
        line.split()[0]: line.split()
        for line in capsys.readouterr().out.splitlines()
        if line[0] != '#'
    }
    assert rows.pop('model') == ['model', 'params', 'MACs', 'output']
    assert sorted(rows) == shown
    for name in shown:
        if REFERENCE[name][:3] == (52, 1, 90):
            assert rows[name][1] == f'{REFERENCE[name][3]:,}'
        assert rows[name][3:] == ['(1,', '52)']
    mynet = build('mynet_v2', num_classes=52, in_channels=1, image_size=90)
    assert rows['mynet_v2'][2] == f'{summary.count_macs(mynet, (90, 90, 1)) / 1e6:,.1f}M'
