"""Every shipped config loads, names a registered model and dataset, and builds its optimizer;
``validate`` rejects each field outside its rule, naming field, value and what is allowed."""

import ml_collections
import pytest

from flaxcnn import models, optim, training
from flaxcnn.config import RULES, ConfigError, default_config, validate
from flaxcnn.data import datasets

from helpers import REPO, load_config

CONFIGS = sorted(p.stem for p in (REPO / 'configs').glob('*.py'))


@pytest.mark.parametrize('name', CONFIGS)
def test_config_is_complete_and_consistent(name):
    config = load_config(name)
    assert config.model in models.model_names()
    assert config.dataset.name in datasets.dataset_names()
    for key in default_config().keys():  # every field the trainer reads is present
        assert key in config, key
    optim.create_optimizer(config)
    optim.create_schedule(config, steps_per_epoch=10)
    assert config.batch_size > 0 and config.eval_batch_size > 0


def test_the_issue_recipes():
    cnn = load_config('fruits_cnn')
    assert (cnn.model, cnn.optimizer.name, cnn.optimizer.lr, cnn.batch_size) == (
        'basic_cnn',
        'adam',
        0.01,
        1024,
    )
    assert cnn.input.flip and cnn.num_epochs == 20
    r50 = load_config('fruits_resnet50')
    assert (r50.optimizer.name, r50.optimizer.momentum, r50.optimizer.lr, r50.batch_size) == (
        'sgd',
        0.9,
        0.001,
        512,
    )
    big = load_config('fruits_proxylessnas_224')
    assert (big.dataset.image_size, big.input.center_crop, big.input.normalization) == (
        256,
        224,
        'imagenet',
    )
    for chest in ('chest_xray_cnn', 'chest_xray_resnet50'):
        assert not load_config(chest).input.flip  # X-rays are never mirrored
    glyph = load_config('glyph')
    assert (glyph.optimizer.lr, glyph.batch_size, glyph.input.flip) == (0.002, 512, False)


# (config file, field, bad value, what the message must say is allowed)
BAD_FIELDS = [
    ('glyph_smoke', 'batch_size', 0, 'an integer > 0'),
    ('glyph_smoke', 'eval_batch_size', -8, 'an integer > 0'),
    ('glyph_smoke', 'num_epochs', 0, 'an integer > 0'),
    ('glyph_smoke', 'optimizer.lr', -1.0, 'a number > 0'),
    ('glyph_smoke', 'optimizer.lr', 0.0, 'a number > 0'),
    ('glyph_smoke', 'optimizer.lr', float('nan'), 'a number > 0'),
    ('glyph_smoke', 'optimizer.momentum', 1.0, 'a number in [0, 1)'),
    ('glyph_smoke', 'optimizer.weight_decay', -0.1, 'a number >= 0'),
    ('glyph_smoke', 'time_budget_s', -1.0, 'a number >= 0'),
    ('glyph_smoke', 'schedule.decay_factor', 0.0, 'a number > 0'),
    ('glyph_smoke', 'schedule.warmup_epochs', -1.0, 'a number >= 0'),
    ('glyph_smoke', 'schedule.decay_epochs', (10, -1), 'a sequence of epochs > 0'),
    ('glyph_smoke', 'model_kwargs.dropout', 1.0, 'a number in [0, 1)'),
    ('glyph_smoke', 'dataset.image_size', 0, 'an integer > 0'),
    ('glyph_smoke', 'dataset.train_per_class', 0, 'an integer > 0'),
    ('glyph_smoke', 'input.rotation_degrees', -5.0, 'a number >= 0'),
    ('glyph_smoke', 'input.center_crop', -1, 'an integer >= 0'),
    ('glyph_smoke', 'input.num_workers', -1, 'an integer >= 0'),
    ('glyph_smoke', 'input.prefetch_batches', 0, 'an integer > 0'),
    ('glyph_smoke', 'checkpoint.every_steps', -1, 'an integer >= 0'),
    ('glyph_smoke', 'checkpoint.max_to_keep', 0, 'an integer > 0'),
    ('glyph_smoke', 'log_every_steps', 0, 'an integer > 0'),
    ('glyph_smoke', 'model', 'mynet_v3', "one of 'basic_cnn'"),
    ('glyph_smoke', 'optimizer.name', 'rmsprop', "one of 'adam', 'adamw', 'sgd'"),
    ('glyph_smoke', 'schedule.name', 'step', "one of 'constant', 'piecewise'"),
    ('glyph_smoke', 'ops', 'slow', "one of 'fast', 'plain'"),
    ('glyph_smoke', 'input.normalization', 'none', "one of 'dataset', 'imagenet'"),
    ('glyph_smoke', 'dataset.name', 'mnist', "one of 'chest_xray', 'fruits360', 'glyphs'"),
    ('fruits_cnn', 'dataset.resize', 'pad', "one of 'crop', 'stretch'"),
    ('fruits_cnn', 'dataset.channels', 2, 'one of 0, 1, 3'),
    ('fruits_cnn', 'dataset.validation_fraction', 1.0, 'a number in (0, 1)'),
]


def _set(config, path, value):
    *parents, name = path.split('.')
    for key in parents:
        config = config[key]
    config[name] = value


@pytest.mark.parametrize(
    'name, path, value, allowed', BAD_FIELDS, ids=[f'{p}={v}' for _, p, v, _ in BAD_FIELDS]
)
def test_a_field_out_of_its_range_is_named_with_its_value_and_rule(name, path, value, allowed):
    config = load_config(name)
    validate(config)  # the shipped config passes
    _set(config, path, value)
    with pytest.raises(ConfigError) as error:
        validate(config)
    assert f'config.{path}={value!r}' in str(error.value)
    assert allowed in str(error.value)


def test_every_numeric_and_enum_field_of_the_default_config_has_a_rule():
    leaves = {
        f'{section}.{key}' if section else key
        for section, node in [('', default_config())] + list(default_config().items())
        if hasattr(node, 'items')
        for key, value in node.items()
        if not hasattr(value, 'items') and not isinstance(value, bool)
    }
    # Free-form or any integer: paths, seeds, the distributed set-up (checked by JAX).
    free = {'seed', 'dataset.data_dir', 'dataset.seed', 'distributed.coordinator_address'}
    free |= {'distributed.num_processes', 'distributed.process_id'}
    assert leaves - free <= set(RULES), sorted(leaves - free - set(RULES))


@pytest.mark.parametrize(
    'model, size, kwargs, fragment',
    [
        ('basic_cnn', 8, {}, 'needs at least 16x16 pixels'),
        ('mynet_v2', 32, {'depth': 3}, "unexpected keyword argument 'depth'"),
    ],
)
def test_the_model_is_checked_against_the_image_size_and_its_kwargs(model, size, kwargs, fragment):
    config = load_config('glyph_smoke')
    config.model, config.dataset.image_size = model, size
    config.model_kwargs = ml_collections.ConfigDict(kwargs)
    with pytest.raises(ConfigError, match=fragment) as error:
        validate(config)
    assert f"config.model='{model}'" in str(error.value)


def test_training_validates_before_any_work(tmp_path):
    config = load_config('glyph_smoke')
    config.batch_size = 0
    with pytest.raises(ConfigError, match='config.batch_size=0'):
        training.train_and_evaluate(config, tmp_path / 'run')
    assert not (tmp_path / 'run').exists()  # no workdir, no dataset read
