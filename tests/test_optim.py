"""Optimizers and schedules built from the config."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxcnn import optim

from helpers import load_config


def _config(**schedule):
    config = load_config('glyph')
    config.num_epochs = 10
    config.optimizer.lr = 0.1
    for k, v in schedule.items():
        config.schedule[k] = v
    return config


def test_time_linear_reaches_zero_exactly_at_budget():
    config = _config(name='time_linear')
    config.time_budget_s = 600.0
    s = optim.create_schedule(config, steps_per_epoch=100)
    assert s.clock == 'seconds'
    np.testing.assert_allclose(s.fn(0.0), 0.1)
    np.testing.assert_allclose(s.fn(300.0), 0.05, rtol=1e-6)
    assert float(s.fn(600.0)) == 0.0
    assert float(s.fn(700.0)) == 0.0


def test_time_linear_needs_a_budget():
    config = _config(name='time_linear')
    config.time_budget_s = 0.0
    with pytest.raises(ValueError, match='time_budget_s'):
        optim.create_schedule(config, steps_per_epoch=100)


def test_piecewise_decays_at_epoch_boundaries():
    s = optim.create_schedule(
        _config(name='piecewise', decay_epochs=(2, 5), decay_factor=0.1), steps_per_epoch=10
    )
    assert s.clock == 'step'
    np.testing.assert_allclose(
        [s.fn(19), s.fn(20), s.fn(49), s.fn(50)], [0.1, 0.01, 0.01, 0.001], rtol=1e-6
    )


def test_cosine_with_warmup():
    s = optim.create_schedule(_config(name='cosine', warmup_epochs=1.0), steps_per_epoch=10)
    np.testing.assert_allclose(
        [s.fn(0), s.fn(5), s.fn(10), s.fn(100)], [0.0, 0.05, 0.1, 0.0], atol=1e-7
    )


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="schedule.name 'bogus'"):
        optim.create_schedule(_config(name='bogus'), steps_per_epoch=10)
    config = _config()
    config.optimizer.name = 'lion'
    with pytest.raises(ValueError, match="optimizer.name 'lion'"):
        optim.create_optimizer(config)


@pytest.mark.parametrize('name', ['adam', 'sgd', 'adamw'])
def test_learning_rate_is_injected_and_overridable(name):
    config = _config()
    config.optimizer.name = name
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 1e-4
    tx = optim.create_optimizer(config)
    params = {'w': jnp.ones(3)}
    state = tx.init(params)
    np.testing.assert_allclose(state.hyperparams['learning_rate'], 0.1)
    state.hyperparams['learning_rate'] = jnp.asarray(0.0)
    updates, _ = tx.update({'w': jnp.ones(3)}, state, params)
    np.testing.assert_array_equal(optax.apply_updates(params, updates)['w'], params['w'])
