"""flaxcnn.models as a whole: registry, exact parameter counts, shapes, the image-size rule,
train/eval modes, the shared layers, the per-layer summary and the command line.

Model-specific structure (basic_cnn, the ResNets, ProxylessNAS) is in test_models_zoo.py.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxcnn import models
from flaxcnn.models import count_params, create_model, layers, model_names, register, summary
from flaxcnn.models import __main__ as cli
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


# --- per-layer summary and the command line -----------------------------------------------------


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
