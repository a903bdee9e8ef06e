"""Tests for flaxcnn.models: registry, parameter counts, shapes, init, modes and layers."""

import functools
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxcnn import models
from flaxcnn.models import count_params, create_model, layers, model_names, register
from flaxcnn.models.__main__ import main as cli_main

REPO_ROOT = Path(__file__).resolve().parents[1]

# Trainable parameter counts at 52 classes, 1 input channel, 90x90 images.
EXPECTED_PARAMS = {
    'mynet_v1': 1_044_212,
    'mynet_v2': 344_468,
    'resnet_lite_11': 1_165_812,
    'resnet_lite_22': 2_641_908,
}


# Shape-only models at this file's reference setting (overridable per call).
abstract_model = functools.partial(
    models.abstract_model, num_classes=52, in_channels=1, image_size=90
)


def abstract_forward(model, shape, **call_kwargs):
    """Output ShapeDtypeStruct of ``model`` on a float32 input of ``shape``."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return nnx.eval_shape(lambda m, inputs: m(inputs, **call_kwargs), model, x)


def small_mynet_v2(seed=0):
    """A real mynet_v2 on 32x32x1 inputs, cheap enough for eager compute."""
    return create_model(
        'mynet_v2', num_classes=5, in_channels=1, image_size=32, rngs=nnx.Rngs(seed)
    )


def test_registry_names():
    assert model_names() == sorted([*EXPECTED_PARAMS, 'basic_cnn', 'proxylessnas_gpu', 'resnet50'])


@pytest.mark.parametrize('name', sorted(EXPECTED_PARAMS))
def test_exact_param_counts(name):
    assert count_params(abstract_model(name)) == EXPECTED_PARAMS[name]


def test_count_params_matches_real_model():
    model = create_model('mynet_v2', num_classes=52, in_channels=1, rngs=nnx.Rngs(0))
    assert count_params(model) == EXPECTED_PARAMS['mynet_v2']


@pytest.mark.parametrize('name', sorted(EXPECTED_PARAMS))
@pytest.mark.parametrize(
    'num_classes,in_channels,image_size',
    [(52, 1, 90), (10, 3, 64), (7, 2, 75)],
)
def test_output_shapes(name, num_classes, in_channels, image_size):
    model = abstract_model(
        name, num_classes=num_classes, in_channels=in_channels, image_size=image_size
    )
    shape = (2, image_size, image_size, in_channels)
    out = abstract_forward(
        model, shape, rngs=jax.random.key(1)
    )  # train mode (the default after construction)
    assert out.shape == (2, num_classes) and out.dtype == jnp.float32
    model.eval()
    out = abstract_forward(model, shape)  # eval mode needs no rngs
    assert out.shape == (2, num_classes) and out.dtype == jnp.float32


def test_non_square_image_size():
    model = abstract_model('mynet_v1', image_size=(90, 64))
    # (90, 64) -> stem (23, 16) -> stage (12, 8)
    assert model.head.in_features == 12 * 8 * 128
    model.eval()
    assert abstract_forward(model, (1, 90, 64, 1)).shape == (1, 52)


def test_flatten_sizes_at_90():
    assert abstract_model('mynet_v1').head.in_features == 12 * 12 * 128 == 18_432
    assert abstract_model('mynet_v2').head.in_features == 6 * 6 * 128 == 4_608


def test_factory_kwargs_tune_model():
    model = abstract_model('mynet_v2', widths=(16, 32, 64), dropout=0.2)
    assert model.dropout.rate == 0.2
    assert model.head.in_features == 6 * 6 * 64
    assert model.stem.conv_bn.conv.out_features == 16
    resnet = abstract_model('resnet_lite_11', widths=(32, 64, 96))
    assert resnet.head.in_features == 96


def test_unknown_kwarg_rejected():
    with pytest.raises(TypeError):
        abstract_model('resnet_lite_11', dropout=0.5)


def test_unknown_model_lists_names():
    with pytest.raises(ValueError) as excinfo:
        create_model('resnet_9000', num_classes=52, in_channels=1, rngs=nnx.Rngs(0))
    message = str(excinfo.value)
    assert 'resnet_9000' in message
    for name in EXPECTED_PARAMS:
        assert name in message


def test_duplicate_registration_rejected():
    with pytest.raises(ValueError, match='already registered'):
        register('mynet_v1')(lambda **kwargs: None)
    assert set(EXPECTED_PARAMS) <= set(model_names())


@pytest.mark.parametrize('name', sorted(EXPECTED_PARAMS))
def test_split_yields_only_params_and_batch_stats(name):
    model = abstract_model(name)
    for set_mode in (model.train, model.eval):
        set_mode()
        parts = nnx.split(model, nnx.Param, nnx.BatchStat)
        assert len(parts) == 3
        graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        assert len(jax.tree.leaves(rest)) == 0
        assert len(jax.tree.leaves(nnx.state(model, nnx.RngState))) == 0
        assert len(jax.tree.leaves(params)) > 0 and len(jax.tree.leaves(batch_stats)) > 0


def test_split_merge_roundtrip():
    model = small_mynet_v2()
    model.eval()
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 1))
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    merged = nnx.merge(graphdef, params, batch_stats)
    np.testing.assert_array_equal(model(x), merged(x))


def test_kaiming_fan_out_init():
    conv = layers.conv(64, 128, 3, rngs=nnx.Rngs(0))
    kernel = np.asarray(conv.kernel[...])
    assert kernel.shape == (3, 3, 64, 128)
    expected_std = math.sqrt(2.0 / (128 * 3 * 3))  # fan_out = out_channels * kh * kw
    assert abs(kernel.std() - expected_std) / expected_std < 0.03
    assert abs(kernel.mean()) < 0.05 * expected_std
    # Untruncated normal (torch kaiming_normal_): values beyond 2 std do occur (~4.6%).
    assert 0.03 < np.mean(np.abs(kernel) > 2 * expected_std) < 0.065
    assert conv.bias is None


def test_model_convs_use_kaiming_and_torch_padding():
    model = create_model('resnet_lite_11', num_classes=52, in_channels=1, rngs=nnx.Rngs(0))
    convs = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.Conv)]
    assert len(convs) == 1 + 3 + 3  # stem + two BasicBlocks with projection shortcuts
    for conv in convs:
        kh, kw = conv.kernel_size
        assert conv.padding == ((kh // 2, kh // 2), (kw // 2, kw // 2))
        assert conv.bias is None
    kernel = np.asarray(model.blocks[1].conv_bn2.conv.kernel[...])  # 256 -> 256, 3x3
    expected_std = math.sqrt(2.0 / (256 * 9))
    assert abs(kernel.std() - expected_std) / expected_std < 0.03


@pytest.mark.parametrize('name', sorted(EXPECTED_PARAMS))
def test_batch_norm_init(name):
    model = create_model(name, num_classes=52, in_channels=1, rngs=nnx.Rngs(0))
    bns = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
    assert bns
    for bn in bns:
        np.testing.assert_array_equal(bn.scale[...], 1.0)
        np.testing.assert_array_equal(bn.bias[...], 0.0)
        np.testing.assert_array_equal(bn.mean[...], 0.0)
        np.testing.assert_array_equal(bn.var[...], 1.0)
        assert bn.momentum == 0.9 and bn.epsilon == 1e-5


def test_batch_norm_momentum_matches_torch():
    bn = layers.batch_norm(4, rngs=nnx.Rngs(0))
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (8, 5, 5, 4))
    bn(x)
    # torch momentum 0.1: running = 0.9 * running + 0.1 * batch statistic
    np.testing.assert_allclose(bn.mean[...], 0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * x.var(axis=(0, 1, 2)), rtol=1e-4)


def test_train_updates_batch_stats_eval_does_not():
    model = small_mynet_v2()
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 1))
    initial = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))

    model.train()
    model(x, rngs=nnx.Rngs(1))
    after_train = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
    for before, after in zip(jax.tree.leaves(initial), jax.tree.leaves(after_train)):
        assert not np.allclose(before, after)

    model.eval()
    out1 = model(x)
    out2 = model(x, rngs=nnx.Rngs(2))  # rngs are ignored in eval mode
    np.testing.assert_array_equal(out1, out2)
    after_eval = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
    for before, after in zip(jax.tree.leaves(after_train), jax.tree.leaves(after_eval)):
        np.testing.assert_array_equal(before, after)


def test_dropout_uses_call_time_rngs():
    model = small_mynet_v2()
    model.train()
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 1))
    out_a = model(x, rngs=nnx.Rngs(dropout=1))
    out_b = model(x, rngs=nnx.Rngs(dropout=2))
    out_a_again = model(x, rngs=nnx.Rngs(dropout=1))
    assert not np.allclose(out_a, out_b)
    np.testing.assert_allclose(out_a, out_a_again, rtol=1e-6, atol=1e-6)
    # A raw key works too.
    out_key = model(x, rngs=jax.random.key(3))
    assert out_key.shape == (2, 5)


def _torch_max_pool_reference(x, window, stride, padding):
    """NumPy max-pool with torch.nn.MaxPool2d semantics (-inf padding, floor mode), NHWC."""
    n, h, w, c = x.shape
    padded = np.full((n, h + 2 * padding, w + 2 * padding, c), -np.inf, dtype=x.dtype)
    padded[:, padding : padding + h, padding : padding + w] = x
    out_h = (h + 2 * padding - window) // stride + 1
    out_w = (w + 2 * padding - window) // stride + 1
    out = np.empty((n, out_h, out_w, c), dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            patch = padded[:, i * stride : i * stride + window, j * stride : j * stride + window]
            out[:, i, j] = patch.max(axis=(1, 2))
    return out


@pytest.mark.parametrize(
    'shape,window,stride,padding',
    [
        ((2, 45, 45, 3), 3, 2, 1),
        ((1, 12, 11, 2), 3, 2, 1),
        ((1, 9, 9, 1), 2, 2, 0),
        ((1, 8, 8, 2), 3, 1, 1),
    ],
)
def test_max_pool_matches_torch_semantics(shape, window, stride, padding):
    x = np.random.default_rng(0).uniform(-5.0, -1.0, size=shape).astype(np.float32)  # all negative
    out = np.asarray(layers.max_pool(jnp.asarray(x), window, stride, padding))
    expected = _torch_max_pool_reference(x, window, stride, padding)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)
    assert np.all(out < 0)  # padding must never leak zeros into the output


@pytest.mark.parametrize('size', [90, 45, 23, 64, 33])
@pytest.mark.parametrize('kernel,stride', [(7, 2), (3, 2), (1, 2), (3, 1)])
def test_conv_output_size_formula(size, kernel, stride):
    conv = nnx.eval_shape(lambda: layers.conv(2, 4, kernel, stride, rngs=nnx.Rngs(0)))
    out = nnx.eval_shape(
        lambda m, x: m(x), conv, jax.ShapeDtypeStruct((1, size, size, 2), jnp.float32)
    )
    assert out.shape[1] == out.shape[2] == layers.conv_output_size(size, kernel, stride)


def test_stem_output_size():
    assert layers.Stem.output_size(90) == 23
    stem = nnx.eval_shape(lambda: layers.Stem(1, 8, rngs=nnx.Rngs(0)))
    out = nnx.eval_shape(lambda m, x: m(x), stem, jax.ShapeDtypeStruct((1, 90, 90, 1), jnp.float32))
    assert out.shape == (1, 23, 23, 8)


def test_cli_default_output():
    result = subprocess.run(
        [sys.executable, '-m', 'flaxcnn.models'],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = {
        line.split()[0]: line.split()
        for line in result.stdout.splitlines()
        if line and line[0] != '#'
    }
    for name, count in EXPECTED_PARAMS.items():
        assert rows[name][1] == f'{count:,}'
        assert ' '.join(rows[name][2:]) == '(1, 52)'


def test_cli_main_custom_args(capsys):
    cli_main(['--num-classes', '10', '--in-channels', '3', '--image-size', '64'])
    lines = [
        line for line in capsys.readouterr().out.splitlines() if line.split()[0] in EXPECTED_PARAMS
    ]
    assert len(lines) == len(EXPECTED_PARAMS)
    assert all(line.endswith('(1, 10)') for line in lines)


def test_functional_train_step_under_jit():
    model = small_mynet_v2()
    model.train()
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 1))
    labels = jnp.arange(4) % 5

    @jax.jit
    def step(params, batch_stats, key):
        def loss_fn(params):
            # copy=True: the merged model's BatchStats are mutated inside the grad trace.
            m = nnx.merge(graphdef, params, batch_stats, copy=True)
            logits = m(x, rngs=key)
            loss = -jnp.mean(
                jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)
            )
            return loss, nnx.state(m, nnx.BatchStat)

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return loss, new_stats, grads

    loss, new_stats, grads = step(params, batch_stats, jax.random.key(1))
    assert np.isfinite(loss)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    for grad in jax.tree.leaves(grads):
        assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    for before, after in zip(jax.tree.leaves(batch_stats), jax.tree.leaves(new_stats)):
        assert not np.allclose(before, after)
