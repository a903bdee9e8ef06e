"""Fast conv / depthwise conv / max-pool / BatchNorm paths equal the plain lax formulation,
values and gradients."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax import lax

from flaxcnn import models, ops
from flaxcnn.models import layers
from flaxcnn.models.proxylessnas import MBConvSpec
from flaxcnn.ops import fast_batch_norm
from flaxcnn.ops import fast_conv
from flaxcnn.ops import fast_max_pool
from flaxcnn.ops import fusion_barrier

TOL = dict(rtol=1e-5, atol=1e-5)
WIDE = fast_conv.YNN_WGRAD_CHANNELS
WINOGRAD = fast_conv.WINOGRAD_CHANNELS


@pytest.fixture
def plain_ops():
    ops.set_implementation('plain')
    yield
    ops.set_implementation('fast')


def _plain_max_pool(x, window, stride, padding):
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), pads
    )


def _value_and_vjp(fn, x, seed=1):
    y, vjp = jax.vjp(fn, x)
    g = jax.random.normal(jax.random.key(seed), y.shape)
    return y, vjp(g)


@pytest.mark.parametrize(
    'size,window,stride,padding',
    [(45, 3, 2, 1), (23, 3, 2, 1), (8, 2, 2, 0), (7, 3, 1, 1), (9, 3, 2, 0), (10, 3, 3, 1)],
)
@pytest.mark.parametrize('ties', [False, True])
def test_max_pool_matches_reduce_window(size, window, stride, padding, ties):
    x = jax.random.normal(jax.random.key(0), (3, size, size + 1, 5))
    if ties:  # few distinct values: many windows hold several equal maxima
        x = jnp.round(x)
    y_fast, (g_fast,) = _value_and_vjp(
        lambda x: fast_max_pool.max_pool(x, window, stride, padding), x
    )
    y_plain, (g_plain,) = _value_and_vjp(lambda x: _plain_max_pool(x, window, stride, padding), x)
    np.testing.assert_array_equal(y_fast, y_plain)
    np.testing.assert_allclose(g_fast, g_plain, **TOL)
    # Each output's gradient lands on one input: gradient mass is conserved.
    g = jax.random.normal(jax.random.key(1), y_fast.shape)
    np.testing.assert_allclose(g_fast.sum(), g.sum(), rtol=1e-4)


@pytest.mark.parametrize(
    'size,kernel,stride', [(12, 3, 1), (12, 3, 2), (11, 5, 2), (9, 7, 1), (10, 7, 2)]
)
def test_depthwise_conv_matches_grouped_lax_conv_with_gradients(size, kernel, stride, plain_ops):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    channels = 6
    x = jax.random.normal(kx, (2, size, size - 1, channels))
    w = jax.random.normal(kw, (kernel, kernel, 1, channels))
    pad = ((kernel // 2,) * 2,) * 2

    def run():  # traced afresh, so it reads the implementation in use
        def conv(x, w):
            return ops.conv_general_dilated(
                x,
                w,
                (stride, stride),
                pad,
                dimension_numbers=fast_conv.NHWC,
                feature_group_count=channels,
            )

        y, vjp = jax.vjp(conv, x, w)
        return str(jax.make_jaxpr(conv)(x, w)), (y, *vjp(jax.random.normal(kg, y.shape)))

    plain_jaxpr, plain = run()
    ops.set_implementation('fast')
    fast_jaxpr, fast = run()
    assert 'feature_group_count=6' in plain_jaxpr
    assert 'conv_general_dilated' not in fast_jaxpr
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_grouped_conv_that_is_not_depthwise_stays_plain():
    x = jnp.ones((1, 5, 5, 4))
    w = jnp.ones((3, 3, 2, 4))
    jaxpr = jax.make_jaxpr(
        lambda x: ops.conv_general_dilated(
            x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=fast_conv.NHWC, feature_group_count=2
        )
    )(x)
    assert 'feature_group_count=2' in str(jaxpr)


def test_max_pool_border_padding_is_minus_infinity():
    x = -jnp.ones((1, 4, 4, 1)) - jnp.arange(16.0).reshape(1, 4, 4, 1)
    y = fast_max_pool.max_pool(x, 3, 2, 1)
    assert float(y.max()) < 0  # padding never wins over negative inputs


def test_max_pool_backward_reads_the_stored_argmax():
    # The compiled gradient computes the int8 window argmax once, before the conditional
    # that stores it, instead of re-deriving it inside the backward fusion.
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
    grad = jax.jit(jax.grad(lambda x: fast_max_pool.max_pool(jax.nn.relu(x), 3, 2, 1).sum()))
    hlo = grad.lower(x).compile().as_text()
    assert re.search(r'= \(s8\[2,5,5,3\][^)]*\) conditional\(', hlo), hlo


@pytest.mark.parametrize('value', [1.5, -2.0, 0.0, -0.0, np.nan, np.inf])
def test_fusion_barrier_keeps_values_and_the_conditional(value):
    x = jnp.arange(12.0).reshape(3, 4).at[0, 0].set(value)
    f = jax.jit(lambda x: fusion_barrier.stored(x.T) @ x)
    np.testing.assert_array_equal(f(x), x.T @ x)  # whatever the first element's sign
    assert ' conditional(' in f.lower(x).compile().as_text()


def test_fusion_barrier_transform_runs_inside_the_conditional():
    # The padded array's first element is a constant zero; the predicate reads x instead, so
    # the conditional stays and XLA cannot fold the pad into the consumer.
    x = jnp.arange(1.0, 13.0).reshape(3, 4)
    f = jax.jit(lambda x: fusion_barrier.stored(x, lambda a: jnp.pad(a.T, 1)) * 2)
    np.testing.assert_array_equal(f(x), 2 * jnp.pad(x.T, 1))
    assert ' conditional(' in f.lower(x).compile().as_text()


def test_fusion_barrier_takes_a_pytree():
    x = jnp.arange(1.0, 13.0).reshape(3, 4)
    f = jax.jit(lambda x: fusion_barrier.stored((x, 2 * x), lambda t: [t[0] + t[1], t[1].T]))
    total, transposed = f(x)
    np.testing.assert_array_equal(total, 3 * x)
    np.testing.assert_array_equal(transposed, 2 * x.T)
    assert ' conditional(' in f.lower(x).compile().as_text()


def _same_conv_loss(x, w):
    return jnp.square(fast_conv.conv2d(x, w, (1, 1), ((1, 1), (1, 1)))).sum()


def test_wide_strided_weight_gradient_keeps_the_transposed_output_gradient():
    # g^T is written once, by the conditional, and the per-tap dots read it as their lhs;
    # without the conditional XLA folds the transpose back into tap^T @ g.
    batch, size = 2, 8
    x = jax.random.normal(jax.random.key(0), (batch, size, size, WIDE))
    w = jax.random.normal(jax.random.key(1), (3, 3, WIDE, WIDE))
    loss = lambda x, w: jnp.square(fast_conv.conv2d(x, w, (2, 2), ((1, 1), (1, 1)))).sum()
    hlo = jax.jit(jax.grad(loss, argnums=1)).lower(x, w).compile().as_text()
    pixels = batch * (size // 2) ** 2
    assert re.search(rf'= \(f32\[{WIDE},{pixels}\][^)]*\) conditional\(', hlo), hlo


def test_stride_one_weight_gradient_is_one_eigen_convolution():
    # The channel-major input (batch as features) convolved with the output gradient, padded
    # to one row taller than the input: a top-level convolution, neither in a YNNPACK fusion
    # nor operand-swapped (window-reversed, which Eigen declines).
    cin = fast_conv.PIXEL_MAJOR_CHANNELS
    x = jax.random.normal(jax.random.key(0), (2, 6, 5, cin))
    w = jax.random.normal(jax.random.key(1), (3, 3, cin, 8))
    hlo = jax.jit(jax.grad(_same_conv_loss, argnums=1)).lower(x, w).compile().as_text()
    convs = re.findall(rf'^  %\S+ = f32\[{cin},3,3,8\]\S* convolution\(.*$', hlo, re.M)
    assert len(convs) == 1 and 'window={size=7x5 ' in convs[0], hlo
    assert 'reversal' not in convs[0]


def test_wide_stride_one_convs_stay_out_of_ynnpack(monkeypatch):
    # Forward pass and input gradient are top-level convolutions (Eigen) with one extra
    # output row; YNNPACK's would be fusions whose root is the convolution.
    monkeypatch.setattr(fast_conv, 'LARGE_CONV_PIXELS', 0)  # a small conv takes the large path
    x = jax.random.normal(jax.random.key(0), (2, 6, 5, fast_conv.EIGEN_CHANNELS))
    w = jax.random.normal(jax.random.key(1), (3, 3, fast_conv.EIGEN_CHANNELS, 8))
    grad = jax.jit(jax.value_and_grad(_same_conv_loss, (0, 1)))
    hlo = grad.lower(x, w).compile().as_text()
    widths = f'(?:8|{fast_conv.EIGEN_CHANNELS})'
    taller = re.findall(rf'^  %\S+ = f32\[2,7,5,{widths}\]\S* convolution\(', hlo, re.M)
    assert len(taller) == 2, hlo


@pytest.mark.parametrize(
    'size,kernel,stride,pad,cin,cout,path',
    [
        # stride 1, at most MAX_TAP_SUM_TERMS taps x channels: a fused sum of products forward
        (12, 3, 1, 1, 3, 4, '_conv_tap_sum'),
        (9, 5, 1, 0, 1, 4, '_conv_tap_sum'),
        (2, 3, 1, 2, 3, 4, '_conv_tap_sum'),  # kernel > input, output > input
        # XLA's forward conv; weight gradient from channel-major tap rows
        (90, 7, 2, 3, 1, 4, '_conv_matmul_wgrad'),
        (23, 3, 2, 1, 6, 4, '_conv_matmul_wgrad'),
        (12, 3, 1, 1, 6, 4, '_conv_matmul_wgrad'),
        (11, 5, 3, 2, 6, 4, '_conv_matmul_wgrad'),
        (10, 3, 2, 1, 6, 4, '_conv_matmul_wgrad'),
        # XLA's forward conv; weight gradient as per-tap matmuls (or tap rows below 16 channels)
        (12, 3, 2, 1, fast_conv.MAX_IM2COL_CHANNELS, 8, '_conv_matmul_wgrad'),
        (12, 3, 1, 1, fast_conv.EIGEN_CHANNELS - 1, 8, '_conv_matmul_wgrad'),
        (10, 3, 2, 1, fast_conv.PIXEL_MAJOR_CHANNELS, 8, '_conv_matmul_wgrad'),
        (11, 5, 3, 2, 20, 4, '_conv_matmul_wgrad'),
        (9, 3, 1, 2, fast_conv.EIGEN_CHANNELS, 8, '_conv_matmul_wgrad'),  # output > input
        # stride 1 from EIGEN_CHANNELS on: taller convs (Eigen), odd sizes and paddings
        (12, 3, 1, 1, fast_conv.EIGEN_CHANNELS, 8, '_conv_eigen'),
        (7, 3, 1, 0, fast_conv.EIGEN_CHANNELS, 8, '_conv_eigen'),
        (11, 5, 1, 2, fast_conv.EIGEN_CHANNELS + 3, 4, '_conv_eigen'),
        (2, 3, 1, 1, fast_conv.EIGEN_CHANNELS, 4, '_conv_eigen'),  # kernel > input
        (12, 3, 1, 1, WINOGRAD - 1, 8, '_conv_eigen'),
        (11, 5, 1, 2, WINOGRAD, 4, '_conv_eigen'),
        # 3x3 stride 1 from WINOGRAD_CHANNELS on: F(4x4, 3x3), partial tiles, every padding
        (6, 3, 1, 1, WINOGRAD, 8, 'conv3x3'),
        (9, 3, 1, 0, WINOGRAD, 4, 'conv3x3'),
        (9, 3, 1, 2, WINOGRAD, 4, 'conv3x3'),  # output > input
        (2, 3, 1, 1, WINOGRAD, 4, 'conv3x3'),  # kernel > input
        # strided and wide: per-tap weight gradients as g^T @ tap (YNNPACK's layout)
        (8, 3, 2, 1, WIDE, WIDE, '_conv_matmul_wgrad'),
        (23, 3, 2, 1, fast_conv.PIXEL_MAJOR_CHANNELS, fast_conv.MIN_IM2COL_OUTPUTS, '_conv_im2col'),
        (10, 3, 2, 1, 20, 64, '_conv_im2col'),
        (11, 5, 3, 2, 17, 64, '_conv_im2col'),
        # 1x1: slice + matmul, weight gradient (g^T @ x)^T
        (23, 1, 2, 0, 6, 4, '_matmul_1x1'),
        (9, 1, 1, 0, 20, 4, '_matmul_1x1'),
    ],
)
def test_conv_matches_lax_with_gradients(size, kernel, stride, pad, cin, cout, path, monkeypatch):
    monkeypatch.setattr(fast_conv, 'LARGE_CONV_PIXELS', 0)  # small convs take the large path
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (2, size, size - 1, cin))
    w = jax.random.normal(kw, (kernel, kernel, cin, cout))
    padding = ((pad, pad), (pad, pad))

    def run(conv):
        y, vjp = jax.vjp(lambda x, w: conv(x, w), x, w)
        return (y, *vjp(jax.random.normal(kg, y.shape)))

    def fast_conv2d(x, w):
        return fast_conv.conv2d(x, w, (stride, stride), padding)

    jaxpr = str(jax.make_jaxpr(fast_conv2d)(x, w))  # the expected formulation is used
    routes = ('conv3x3', '_conv_eigen', '_conv_tap_sum', '_conv_matmul_wgrad', '_conv_im2col')
    for name in (*routes, '_matmul_1x1'):
        assert (f'name={name}\n' in jaxpr) == (name == path), f'{path} expected in {jaxpr}'
    fast = run(fast_conv2d)
    plain = run(
        lambda x, w: lax.conv_general_dilated(
            x, w, (stride, stride), padding, dimension_numbers=fast_conv.NHWC
        )
    )
    for a, b in zip(fast, plain):
        # Winograd's rounding error scales with the largest value (module docstring).
        scale = 1 + float(np.abs(b).max()) if path == 'conv3x3' else 1
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize('shape', [(4, 9, 8, 6), (2, 1, 1, 3), (3, 5, 5, 1)])
def test_batch_norm_matches_nnx_with_gradients(shape):
    kx, ks, kb, kg = jax.random.split(jax.random.key(0), 4)
    x = 3 * jax.random.normal(kx, shape) + 1
    x = x.at[..., 0].set(2.0)  # a constant channel: zero variance
    scale = jax.random.normal(ks, shape[-1:])
    bias = jax.random.normal(kb, shape[-1:])
    norm = nnx.BatchNorm(shape[-1], momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    norm.scale[...], norm.bias[...] = scale, bias

    def run(fn):
        (y, mean, var), vjp = jax.vjp(fn, x, scale, bias)
        g = jax.random.normal(kg, shape)
        return (y, mean, var, *vjp((g, jnp.zeros_like(mean), jnp.zeros_like(var))))

    fast = run(lambda x, s, b: fast_batch_norm.batch_norm(x, s, b, 1e-5))
    plain = run(lambda x, s, b: fast_batch_norm.normalize(x, s, b, 1e-5))
    np.testing.assert_allclose(fast[0], norm(x), **TOL)
    # nnx's running averages start at zero and one, momentum 0.9.
    np.testing.assert_allclose(0.1 * fast[1], norm.mean[...], **TOL)
    np.testing.assert_allclose(0.9 + 0.1 * fast[2], norm.var[...], **TOL)
    for a, b in zip(fast, plain):  # absolute tolerance scaled: a batch of 2 has huge gradients
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * (1 + float(np.abs(b).max())))


def test_batch_norm_layer_keeps_nnx_state_and_eval_mode():
    norm = layers.batch_norm(3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (4, 5, 5, 3))
    reference = nnx.BatchNorm(3, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    for module in (norm, reference):
        module(x)
        module(2 * x)
    states = jax.tree.map(np.asarray, (nnx.state(norm), nnx.state(reference)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), *states)
    norm.eval()
    reference.eval()
    np.testing.assert_array_equal(norm(x), reference(x))


def _loss_and_grads(name, **kwargs):
    model = models.create_model(
        name, num_classes=52, in_channels=1, image_size=33, rngs=nnx.Rngs(0), **kwargs
    )
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    x = jax.random.normal(jax.random.key(1), (4, 33, 33, 1))
    labels = jnp.arange(4)

    def loss_fn(params):
        m = nnx.merge(graphdef, params, stats, copy=True)
        logits = m(x, rngs=jax.random.key(2))
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return jax.jit(jax.value_and_grad(loss_fn))(params)


SMALL_PROXYLESS = {
    'blocks': (MBConvSpec(8, 3, 1), MBConvSpec(16, 5, 3, 2), MBConvSpec(16, 7, 3)),
    'stem_channels': 8,
    'head_channels': 32,
}


@pytest.mark.parametrize(
    'name', ['mynet_v1', 'mynet_v2', 'basic_cnn', 'resnet_lite_11', 'proxylessnas_gpu']
)
def test_whole_model_loss_and_gradients_equal_plain(name, plain_ops, monkeypatch):
    monkeypatch.setattr(fast_conv, 'LARGE_CONV_PIXELS', 0)  # Winograd and Eigen routes too
    kwargs = {'mynet_v2': {'widths': (8, 16, 32)}, 'proxylessnas_gpu': SMALL_PROXYLESS}
    kwargs = kwargs.get(name, {})
    plain = _loss_and_grads(name, **kwargs)
    ops.set_implementation('fast')
    fast = _loss_and_grads(name, **kwargs)
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5), fast[1], plain[1]
    )


def test_switch_selects_the_implementation(plain_ops):
    x = jnp.ones((1, 9, 9, 2))
    w = jnp.ones((3, 3, 2, 2))
    grad = lambda: jax.make_jaxpr(
        jax.grad(
            lambda x: ops.max_pool(
                ops.conv_general_dilated(
                    x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=fast_conv.NHWC
                ),
                3,
                2,
                1,
            ).sum()
        )
    )(x)
    assert 'select_and_scatter' in str(grad())
    ops.set_implementation('fast')
    assert 'select_and_scatter' not in str(grad())
    with pytest.raises(ValueError, match='ops implementation'):
        ops.set_implementation('cuda')
