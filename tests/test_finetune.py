"""Fine-tuning controls (``flaxcnn.finetune``, ``config.finetune``) on the smoke config's narrow
MyNet v2: frozen parameters and BatchNorms, the backbone's learning-rate scale, the head warm-up."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from flaxcnn import checkpoint, finetune, models, optim, steps, training
from flaxcnn.config import ConfigError, default_config

from helpers_models import quick_rngs


def tiny_model():
    return models.create_model(
        'mynet_v2', num_classes=52, in_channels=1, image_size=32, rngs=quick_rngs(),
        widths=(8, 16, 32),
    )  # fmt: skip


def train(config, num_steps: int = 3):
    """(initial state, state after ``num_steps`` train steps on random batches, groups)."""
    model = tiny_model()
    groups = finetune.parameter_groups(config, model)
    tx = finetune.wrap_optimizer(optim.create_optimizer, config, groups)
    graphdef, _, start = steps.create_train_state(model, tx, seed=0)
    graphdef = finetune.freeze_batch_norms(graphdef, start, groups)
    step = steps.make_train_step(
        graphdef, tx, lambda _: config.optimizer.lr, mean=[128.0], std=[64.0]
    )
    step = jax.jit(step)
    rng, state = np.random.default_rng(0), start
    for _ in range(num_steps):
        batch = {
            'image': rng.integers(0, 256, (8, 32, 32, 1), dtype=np.uint8),
            'label': rng.integers(0, 52, 8, dtype=np.int32),
        }
        state, _ = step(state, batch, np.float32(0))
    return start, state, groups


def flat(state) -> dict:
    return {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(state)}


def unchanged(before, after) -> dict:
    """Path -> whether the array is bit-identical after the steps."""
    after = flat(after)
    return {path: np.array_equal(value, after[path]) for path, value in flat(before).items()}


def test_frozen_backbone_keeps_params_and_statistics_and_has_no_optimizer_state(smoke_config):
    smoke_config.finetune.freeze = 'backbone'
    start, end, _ = train(smoke_config)
    same = unchanged(start.params, end.params)
    assert {p for p, s in same.items() if not s} == {('head', 'kernel'), ('head', 'bias')}
    assert all(unchanged(start.batch_stats, end.batch_stats).values())
    moments = [leaf.shape for leaf in jax.tree.leaves(end.opt_state) if leaf.ndim]
    assert sorted(moments) == sorted([(128, 52), (52,)] * 2)  # Adam's mu and nu of the head


def test_unfrozen_statistics_do_change(smoke_config):  # the control of the test above
    start, end, _ = train(smoke_config, num_steps=1)
    assert not any(unchanged(start.batch_stats, end.batch_stats).values())
    assert not any(unchanged(start.params, end.params).values())


def test_freeze_by_path_prefixes(smoke_config):
    smoke_config.finetune.freeze = 'stem, stages.0'
    start, end, groups = train(smoke_config, num_steps=2)
    for before, after in ((start.params, end.params), (start.batch_stats, end.batch_stats)):
        same = unchanged(before, after)
        frozen = {p for p in same if p[0] == 'stem' or p[:2] == ('stages', 0)}
        assert {p for p, s in same.items() if s} == frozen
    assert set(jax.tree.leaves(groups)) == {'frozen', 'backbone', 'head'}


def test_unknown_freeze_prefix_is_a_config_error(smoke_config):
    smoke_config.finetune.freeze = 'stem,blocks.0'
    with pytest.raises(ConfigError, match=r'mynet_v2 is under blocks\.0; .* head, stages, stem'):
        finetune.parameter_groups(smoke_config, tiny_model())


def _updates(config, grads_list, learning_rate):
    """The wrapped optimizer's updates for each of ``grads_list``, the learning rate injected
    as the train step does."""
    params = nnx.state(tiny_model(), nnx.Param)
    groups = finetune.parameter_groups(config, tiny_model())
    tx = finetune.wrap_optimizer(optim.create_optimizer, config, groups)
    state, out, update = tx.init(params), [], jax.jit(tx.update)
    for grads in grads_list:
        state.hyperparams['learning_rate'] = jnp.float32(learning_rate)
        updates, state = update(grads, state, params)
        out.append(flat(updates))
    return params, out


def _random_grads(params, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)


@pytest.mark.parametrize('name', ['adam', 'sgd'])
def test_backbone_lr_scale_scales_the_backbone_update_exactly(smoke_config, name):
    smoke_config.optimizer.name = name
    smoke_config.finetune.backbone_lr_scale = 0.1
    lr = 0.003  # injected, as a schedule sets it: not config.optimizer.lr
    params = nnx.state(tiny_model(), nnx.Param)
    grads = [_random_grads(params, seed) for seed in (1, 2)]
    _, got = _updates(smoke_config, grads, lr)
    make = {'adam': optax.adam, 'sgd': lambda r: optax.sgd(r, momentum=0.9)}[name]
    for rate, is_head in ((lr, True), (lr * 0.1, False)):
        reference = make(rate)
        state, update = reference.init(params), jax.jit(reference.update)
        for grad, updates in zip(grads, got):
            expected, state = update(grad, state, params)
            for path, value in flat(expected).items():
                if (path[0] == 'head') == is_head:
                    np.testing.assert_allclose(updates[path], value, rtol=1e-6, atol=1e-10)


def test_head_warmup_updates_only_the_head_first(smoke_config):
    smoke_config.finetune.head_warmup_steps = 2
    params = nnx.state(tiny_model(), nnx.Param)
    _, got = _updates(smoke_config, [_random_grads(params, s) for s in range(3)], 0.001)
    for index, updates in enumerate(got):
        for path, value in updates.items():
            moved = bool(np.any(value != 0))
            assert moved == (path[0] == 'head' or index >= 2), (index, path)


def test_without_finetuning_the_optimizer_is_the_plain_one(smoke_config):
    params = nnx.state(tiny_model(), nnx.Param)
    groups = finetune.parameter_groups(smoke_config, tiny_model())
    wrapped = finetune.wrap_optimizer(optim.create_optimizer, smoke_config, groups).init(params)
    plain = optim.create_optimizer(smoke_config).init(params)
    assert jax.tree.structure(wrapped) == jax.tree.structure(plain)  # old checkpoints resume


@pytest.mark.parametrize(
    'field, value, named',
    [
        ('finetune.freeze', 'backbone', "finetune.freeze: 'none' -> 'backbone'"),
        ('finetune.backbone_lr_scale', 0.1, 'head_warmup_steps on: False -> True'),
        ('optimizer.name', 'sgd', "optimizer.name: 'adam' -> 'sgd'"),
        ('optimizer.weight_decay', 1e-4, 'optimizer.weight_decay on: False -> True'),
    ],
)
def test_resuming_with_a_setting_that_reshapes_the_state_is_refused_by_name(
    tmp_path, field, value, named
):
    saved, config = default_config(), default_config()
    section, name = field.split('.')
    config[section][name] = value
    with pytest.raises(checkpoint.RunMismatchError, match=re.escape(named)):
        training._check_same_state_layout(tmp_path, saved, config)
    config[section][name] = saved[section][name]
    training._check_same_state_layout(tmp_path, saved, config)  # the same shape resumes
