"""The fast ops equal the plain lax formulation, values and gradients; sections follow
flaxcnn/ops/ module by module, and each conv route is checked to be the one that ran."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import slow_case
from jax import lax

from flaxcnn import models, ops
from flaxcnn.models import layers
from flaxcnn.models.proxylessnas import MBConvSpec
from flaxcnn.ops import (
    eigen,
    fusion_barrier,
    geometry,
    im2col,
    normalization,
    pointwise,
    pooling,
    routes,
    tap_sum,
    weight_grad,
    winograd,
    xla_conv,
)
from flaxcnn.ops.xla_conv import NHWC

TOL = dict(rtol=1e-5, atol=1e-5)
PIXEL_MAJOR = weight_grad.PIXEL_MAJOR_CHANNELS
WIDE = weight_grad.YNN_WGRAD_CHANNELS
EIGEN = routes.EIGEN_CHANNELS
WINOGRAD = routes.WINOGRAD_CHANNELS
# Every conv route's custom_vjp, by the name it has in a jaxpr.
ROUTES = (
    pointwise.matmul_1x1,
    winograd.conv3x3,
    eigen.eigen_conv,
    tap_sum.tap_sum_conv,
    im2col.im2col_conv,
    weight_grad.xla_conv_matmul_weight_grad,
)


@pytest.fixture
def every_conv_is_large(monkeypatch):
    """Small test convs take the Winograd and Eigen routes too."""
    monkeypatch.setattr(routes, 'LARGE_CONV_PIXELS', 0)


def _normal(seed, shape):
    """Standard normal float32 values drawn by NumPy: no random-number program to compile
    (compiling JAX's is most of a small eager test's time)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def _value_and_grads(fn, *args, seed=1):
    """``fn(*args)`` and the gradients of ``<fn(*args), g>`` for a random ``g``.

    Run op by op: for these small tests faster than compiling the whole (unrolled) program.
    """
    y, vjp = jax.vjp(fn, *args)
    return (y, *vjp(_normal(seed, y.shape)))


def _conv_grad_hlo(loss, *args, argnums=1):
    return jax.jit(jax.grad(loss, argnums=argnums)).lower(*args).compile().as_text()


def _same_conv_loss(x, w):
    return jnp.square(routes.conv2d(x, w, (1, 1), ((1, 1), (1, 1)))).sum()


# --- the switch: ops.set_implementation, ops.use -------------------------------------------


def _conv_pool_grad_jaxpr():
    x = jnp.ones((1, 9, 9, 2))
    w = jnp.ones((3, 3, 2, 2))
    conv = lambda x: ops.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC
    )
    return str(jax.make_jaxpr(jax.grad(lambda x: ops.max_pool(conv(x), 3, 2, 1).sum()))(x))


def test_switch_selects_the_implementation():
    assert ops.implementation() == 'fast'
    assert 'select_and_scatter' not in _conv_pool_grad_jaxpr()
    ops.set_implementation('plain')
    try:
        assert 'select_and_scatter' in _conv_pool_grad_jaxpr()
    finally:
        ops.set_implementation('fast')
    with pytest.raises(ValueError, match='ops implementation'):
        ops.set_implementation('cuda')


def test_use_switches_for_the_block_and_restores_on_exit_and_on_error():
    with ops.use('plain'):
        assert ops.implementation() == 'plain'
        assert 'select_and_scatter' in _conv_pool_grad_jaxpr()  # traced inside: plain ops
        with ops.use('fast'):
            assert 'select_and_scatter' not in _conv_pool_grad_jaxpr()
        assert ops.implementation() == 'plain'  # the enclosing block's choice is back
    assert ops.implementation() == 'fast'
    with pytest.raises(RuntimeError, match='inside'):
        with ops.use('plain'):
            raise RuntimeError('inside')
    assert ops.implementation() == 'fast'
    with pytest.raises(ValueError, match='ops implementation'):
        with ops.use('cuda'):
            pass
    assert ops.implementation() == 'fast'


# --- geometry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'size,kernel,stride,padding,expected',
    [(90, 7, 2, 3, 45), (45, 3, 2, 1, 23), (8, 2, 2, 0, 4), (9, 3, 1, (0, 2), 9), (2, 3, 1, 0, 0)],
)
def test_output_size_is_the_floor_formula(size, kernel, stride, padding, expected):
    assert geometry.output_size(size, kernel, stride, padding) == expected


@pytest.mark.parametrize('stride,padding', [((1, 1), ((1, 1), (1, 1))), ((2, 3), ((0, 2), (1, 0)))])
def test_tap_slices_are_the_pixels_each_tap_sees(stride, padding):
    x = jnp.arange(2 * 7 * 8 * 3, dtype=jnp.float32).reshape(2, 7, 8, 3)
    taps = geometry.tap_slices(x, (3, 2), stride, padding)
    padded = np.pad(np.asarray(x), ((0, 0), padding[0], padding[1], (0, 0)))
    out_h, out_w = geometry.output_hw(7, 8, (3, 2), stride, padding)
    assert len(taps) == 6
    for k, tap in enumerate(taps):
        i, j = divmod(k, 2)
        rows = i + stride[0] * np.arange(out_h)
        cols = j + stride[1] * np.arange(out_w)
        np.testing.assert_array_equal(tap, padded[:, rows][:, :, cols])
    channel_major = geometry.channel_major_tap_slices(x, (3, 2), stride, padding)
    for tap, tap_cm in zip(taps, channel_major):
        np.testing.assert_array_equal(tap_cm, tap.transpose(3, 0, 1, 2))


# --- the conv routes, each against lax with both gradients ----------------------------------


def _assert_conv_matches_lax(size, kernel, stride, pad, cin, cout, route):
    x = _normal(0, (2, size, size - 1, cin))
    w = _normal(2, (kernel, kernel, cin, cout))
    strides, padding = (stride, stride), ((pad, pad), (pad, pad))
    fast_conv = lambda x, w: routes.conv2d(x, w, strides, padding)
    jaxpr = str(jax.make_jaxpr(fast_conv)(x, w))  # the expected route is the one taken
    for other in ROUTES:
        taken = f'name={other.__name__}\n' in jaxpr
        assert taken == (other is route), f'{route.__name__} expected in {jaxpr}'
    fast = _value_and_grads(fast_conv, x, w)
    plain = _value_and_grads(lambda x, w: xla_conv.conv(x, w, strides, padding), x, w)
    for a, b in zip(fast, plain):
        # Winograd's rounding error scales with the largest value (ops/README.md).
        scale = 1 + float(np.abs(b).max()) if route is winograd.conv3x3 else 1
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale)


CONV_CASE = 'size,kernel,stride,pad,cin,cout'


@pytest.mark.parametrize(CONV_CASE, [(23, 1, 2, 0, 6, 4), slow_case(9, 1, 1, 0, 20, 4)])
def test_pointwise(size, kernel, stride, pad, cin, cout):
    _assert_conv_matches_lax(size, kernel, stride, pad, cin, cout, pointwise.matmul_1x1)


@pytest.mark.parametrize(
    CONV_CASE,
    [
        (6, 3, 1, 1, WINOGRAD, 8),
        slow_case(9, 3, 1, 0, WINOGRAD, 4),
        slow_case(9, 3, 1, 2, WINOGRAD, 4),  # output > input
        slow_case(2, 3, 1, 1, WINOGRAD, 4),  # kernel > input
    ],
)
def test_winograd(size, kernel, stride, pad, cin, cout, every_conv_is_large):
    _assert_conv_matches_lax(size, kernel, stride, pad, cin, cout, winograd.conv3x3)


@pytest.mark.parametrize(
    CONV_CASE,
    [
        (12, 3, 1, 1, EIGEN, 8),
        slow_case(7, 3, 1, 0, EIGEN, 8),
        slow_case(11, 5, 1, 2, EIGEN + 3, 4),
        slow_case(2, 3, 1, 1, EIGEN, 4),  # kernel > input
        slow_case(12, 3, 1, 1, WINOGRAD - 1, 8),
        slow_case(11, 5, 1, 2, WINOGRAD, 4),  # not 3x3: no Winograd
    ],
)
def test_eigen(size, kernel, stride, pad, cin, cout, every_conv_is_large):
    _assert_conv_matches_lax(size, kernel, stride, pad, cin, cout, eigen.eigen_conv)


@pytest.mark.parametrize(
    CONV_CASE,
    [
        (12, 3, 1, 1, 3, 4),
        slow_case(9, 5, 1, 0, 1, 4),
        slow_case(2, 3, 1, 2, 3, 4),
    ],  # last: output > input
)
def test_tap_sum(size, kernel, stride, pad, cin, cout):
    _assert_conv_matches_lax(size, kernel, stride, pad, cin, cout, tap_sum.tap_sum_conv)


@pytest.mark.parametrize(
    CONV_CASE,
    [
        (23, 3, 2, 1, PIXEL_MAJOR, routes.MIN_IM2COL_OUTPUTS),
        slow_case(10, 3, 2, 1, 20, 64),
        slow_case(11, 5, 3, 2, 17, 64),
    ],
)
def test_im2col(size, kernel, stride, pad, cin, cout):
    _assert_conv_matches_lax(size, kernel, stride, pad, cin, cout, im2col.im2col_conv)


@pytest.mark.parametrize(
    CONV_CASE,
    [
        # below PIXEL_MAJOR_CHANNELS: channel-major tap rows
        (90, 7, 2, 3, 1, 4),
        slow_case(23, 3, 2, 1, 6, 4),
        slow_case(12, 3, 1, 1, 6, 4),
        slow_case(11, 5, 3, 2, 6, 4),
        slow_case(12, 3, 1, 1, EIGEN - 1, 8),
        # per-tap matmuls (stride 1: the Eigen weight gradient)
        (12, 3, 2, 1, routes.MAX_IM2COL_CHANNELS, 8),
        slow_case(10, 3, 2, 1, PIXEL_MAJOR, 8),
        slow_case(11, 5, 3, 2, 20, 4),
        slow_case(9, 3, 1, 2, EIGEN, 8),  # output > input: not the Eigen route
        (8, 3, 2, 1, WIDE, WIDE),  # wide: g^T @ tap
    ],
)
def test_xla_conv_matmul_weight_grad(size, kernel, stride, pad, cin, cout, every_conv_is_large):
    route = weight_grad.xla_conv_matmul_weight_grad
    _assert_conv_matches_lax(size, kernel, stride, pad, cin, cout, route)


def test_wide_strided_weight_gradient_keeps_the_transposed_output_gradient():
    # g^T is written once, by the conditional, and the per-tap dots read it as their lhs;
    # without the conditional XLA folds the transpose back into tap^T @ g.
    batch, size = 2, 8
    x = _normal(0, (batch, size, size, WIDE))
    w = _normal(2, (3, 3, WIDE, WIDE))
    loss = lambda x, w: jnp.square(routes.conv2d(x, w, (2, 2), ((1, 1), (1, 1)))).sum()
    hlo = _conv_grad_hlo(loss, x, w)
    pixels = batch * (size // 2) ** 2
    assert re.search(rf'= \(f32\[{WIDE},{pixels}\][^)]*\) conditional\(', hlo), hlo


def test_stride_one_weight_gradient_is_one_eigen_convolution():
    # The channel-major input (batch as features) convolved with the output gradient, padded
    # to one row taller than the input: a top-level convolution, neither in a YNNPACK fusion
    # nor operand-swapped (window-reversed, which Eigen declines).
    x = _normal(0, (2, 6, 5, PIXEL_MAJOR))
    w = _normal(2, (3, 3, PIXEL_MAJOR, 8))
    hlo = _conv_grad_hlo(_same_conv_loss, x, w)
    convs = re.findall(rf'^  %\S+ = f32\[{PIXEL_MAJOR},3,3,8\]\S* convolution\(.*$', hlo, re.M)
    assert len(convs) == 1 and 'window={size=7x5 ' in convs[0], hlo
    assert 'reversal' not in convs[0]


def test_eigen_route_convs_stay_out_of_ynnpack(every_conv_is_large):
    # Forward pass and input gradient are top-level convolutions (Eigen) with one extra
    # output row; YNNPACK's would be fusions whose root is the convolution.
    x = _normal(0, (2, 6, 5, EIGEN))
    w = _normal(2, (3, 3, EIGEN, 8))
    hlo = _conv_grad_hlo(_same_conv_loss, x, w, argnums=(0, 1))
    taller = re.findall(rf'^  %\S+ = f32\[2,7,5,(?:8|{EIGEN})\]\S* convolution\(', hlo, re.M)
    assert len(taller) == 2, hlo


# --- depthwise and grouped convs (routes.conv_general_dilated) ------------------------------


@pytest.mark.parametrize(
    'size,kernel,stride',
    [slow_case(12, 3, 1), (12, 3, 2), slow_case(11, 5, 2), slow_case(9, 7, 1), slow_case(10, 7, 2)],
)
def test_depthwise_conv_matches_grouped_lax_conv_with_gradients(size, kernel, stride):
    channels = 6
    x = _normal(0, (2, size, size - 1, channels))
    w = _normal(2, (kernel, kernel, 1, channels))
    pad = ((kernel // 2,) * 2,) * 2

    def run():  # a new function: traced afresh (not from jax's cache) with the ops in use
        def conv(x, w):
            return ops.conv_general_dilated(
                x, w, (stride, stride), pad, dimension_numbers=NHWC, feature_group_count=channels
            )

        return str(jax.make_jaxpr(conv)(x, w)), _value_and_grads(conv, x, w)

    with ops.use('plain'):
        plain_jaxpr, plain = run()
    fast_jaxpr, fast = run()
    assert 'feature_group_count=6' in plain_jaxpr
    assert 'conv_general_dilated' not in fast_jaxpr and 'name=depthwise_conv\n' in fast_jaxpr
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_grouped_conv_that_is_not_depthwise_stays_plain():
    x = jnp.ones((1, 5, 5, 4))
    w = jnp.ones((3, 3, 2, 4))
    jaxpr = jax.make_jaxpr(
        lambda x: ops.conv_general_dilated(
            x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC, feature_group_count=2
        )
    )(x)
    assert 'feature_group_count=2' in str(jaxpr)


# --- pooling --------------------------------------------------------------------------------


def _plain_max_pool(x, window, stride, padding):
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), pads
    )


@pytest.mark.parametrize(
    'size,window,stride,padding,ties',
    [
        (23, 3, 2, 1, True),  # overlapping windows, tied maxima
        (8, 2, 2, 0, False),  # disjoint windows
        slow_case(45, 3, 2, 1, False),
        slow_case(45, 3, 2, 1, True),
        slow_case(23, 3, 2, 1, False),
        slow_case(8, 2, 2, 0, True),
        slow_case(7, 3, 1, 1, False),
        slow_case(7, 3, 1, 1, True),
        slow_case(9, 3, 2, 0, False),
        slow_case(9, 3, 2, 0, True),
        slow_case(10, 3, 3, 1, False),
        slow_case(10, 3, 3, 1, True),
    ],
)
def test_max_pool_matches_reduce_window(size, window, stride, padding, ties):
    x = _normal(0, (3, size, size + 1, 5))
    if ties:  # few distinct values: many windows hold several equal maxima
        x = jnp.round(x)
    fast_pool = lambda x: pooling.max_pool(x, window, stride, padding)
    y_fast, g_fast = _value_and_grads(fast_pool, x)
    y_plain, g_plain = _value_and_grads(lambda x: _plain_max_pool(x, window, stride, padding), x)
    np.testing.assert_array_equal(y_fast, y_plain)
    np.testing.assert_allclose(g_fast, g_plain, **TOL)
    # Each output's gradient lands on one input: gradient mass is conserved.
    g = _normal(1, y_fast.shape)  # the output gradient _value_and_grads drew
    np.testing.assert_allclose(g_fast.sum(), g.sum(), rtol=1e-4)


def test_max_pool_border_padding_is_minus_infinity():
    x = -jnp.ones((1, 4, 4, 1)) - jnp.arange(16.0).reshape(1, 4, 4, 1)
    y = pooling.max_pool(x, 3, 2, 1)
    assert float(y.max()) < 0  # padding never wins over negative inputs


def test_max_pool_backward_reads_the_stored_argmax():
    # The compiled gradient computes the int8 window argmax once, before the conditional
    # that stores it, instead of re-deriving it inside the backward fusion.
    x = _normal(0, (2, 9, 9, 3))
    grad = jax.jit(jax.grad(lambda x: pooling.max_pool(jax.nn.relu(x), 3, 2, 1).sum()))
    hlo = grad.lower(x).compile().as_text()
    assert re.search(r'= \(s8\[2,5,5,3\][^)]*\) conditional\(', hlo), hlo


# --- fusion_barrier -------------------------------------------------------------------------


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


# --- normalization --------------------------------------------------------------------------


@pytest.mark.parametrize('shape', [(4, 9, 8, 6), slow_case((2, 1, 1, 3)), slow_case((3, 5, 5, 1))])
def test_batch_norm_matches_nnx_with_gradients(shape):
    x = 3 * _normal(0, shape) + 1
    x = x.at[..., 0].set(2.0)  # a constant channel: zero variance
    scale = _normal(2, shape[-1:])
    bias = _normal(3, shape[-1:])
    norm = nnx.BatchNorm(shape[-1], momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    norm.scale[...], norm.bias[...] = scale, bias

    def run(fn):
        (y, mean, var), vjp = jax.vjp(fn, x, scale, bias)
        g = _normal(4, shape)
        return (y, mean, var, *vjp((g, jnp.zeros_like(mean), jnp.zeros_like(var))))

    fast = run(lambda x, s, b: normalization.batch_norm(x, s, b, 1e-5))
    plain = run(lambda x, s, b: normalization.normalize(x, s, b, 1e-5))
    np.testing.assert_allclose(fast[0], norm(x), **TOL)
    # nnx's running averages start at zero and one, momentum 0.9.
    np.testing.assert_allclose(0.1 * fast[1], norm.mean[...], **TOL)
    np.testing.assert_allclose(0.9 + 0.1 * fast[2], norm.var[...], **TOL)
    for a, b in zip(fast, plain):  # absolute tolerance scaled: a batch of 2 has huge gradients
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * (1 + float(np.abs(b).max())))


def test_batch_norm_layer_keeps_nnx_state_and_eval_mode():
    norm = layers.batch_norm(3, rngs=nnx.Rngs(0))
    x = _normal(0, (4, 5, 5, 3))
    reference = nnx.BatchNorm(3, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    for module in (norm, reference):
        module(x)
        module(2 * x)
    states = jax.tree.map(np.asarray, (nnx.state(norm), nnx.state(reference)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), *states)
    norm.eval()
    reference.eval()
    np.testing.assert_array_equal(norm(x), reference(x))


# --- whole models ---------------------------------------------------------------------------


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
    'name',
    [
        'basic_cnn',  # the stem's tap sum, Eigen route and weight gradients, max-pools
        *(
            slow_case(name)
            for name in ('mynet_v1', 'mynet_v2', 'resnet_lite_11', 'proxylessnas_gpu')
        ),
    ],
)
def test_whole_model_loss_and_gradients_equal_plain(name, every_conv_is_large):
    kwargs = {'mynet_v2': {'widths': (8, 16, 32)}, 'proxylessnas_gpu': SMALL_PROXYLESS}
    kwargs = kwargs.get(name, {})
    with ops.use('plain'):
        plain = _loss_and_grads(name, **kwargs)
    fast = _loss_and_grads(name, **kwargs)
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5), fast[1], plain[1]
    )
