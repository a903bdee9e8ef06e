"""Every shipped config loads, names a registered model and dataset, and builds its optimizer."""

import pytest

from flaxcnn import models, optim
from flaxcnn.config import default_config
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
