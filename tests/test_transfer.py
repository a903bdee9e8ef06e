"""Starting a run from pretrained weights (``flaxcnn.transfer``, ``config.init.source``).

Sources are imported-weights folders written directly from tiny flaxcnn models (the PyTorch
import itself is proven in test_weights.py) and the session's smoke run. A target is the smoke
config's narrow MyNet v2 (52 classes, 1 channel, 32 px), freshly initialised.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from flax import nnx

from flaxcnn import checkpoint, convert, models, training, transfer
from flaxcnn.convert import WeightsError

from helpers_models import quick_rngs

SMOKE_WIDTHS = (8, 16, 32)


def write_weights(out, model='mynet_v2', *, num_classes=10, in_channels=3, image_size=32, **kw):
    """An imported-weights folder of a seeded ``model``; returns that model."""
    kw = {'widths': SMOKE_WIDTHS, **kw}
    network = models.create_model(
        model,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        rngs=quick_rngs(7),
        **kw,
    )
    metadata = {
        'model': model,
        'model_kwargs': kw,
        'num_classes': num_classes,
        'in_channels': in_channels,
        'image_size': image_size,
        'normalization': 'imagenet',
        'source': {'file': 'made.safetensors', 'sha256': 'ab' * 32, 'layout': 'test'},
    }
    convert.folder.write(out, network, metadata)
    return network


def fresh_variables(config, in_channels=1, num_classes=52):
    """(params, batch_stats) of a new ``config.model``, as training creates them."""
    network = models.create_model(
        config.model,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=config.dataset.image_size,
        rngs=quick_rngs(),
        **config.model_kwargs.to_dict(),
    )
    _, params, batch_stats = nnx.split(network, nnx.Param, nnx.BatchStat)
    return params, batch_stats


def flat(state) -> dict:
    return {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(state)}


def test_weights_folder_loads_by_path_reinitialises_head_and_sums_input_channels(
    smoke_config, tmp_path
):
    source = write_weights(tmp_path / 'w', num_classes=10, in_channels=3)
    smoke_config.init.source = str(tmp_path / 'w')
    fresh = fresh_variables(smoke_config)
    params, batch_stats, report = transfer.load_initial_variables(smoke_config, *fresh)

    given, got, initial = flat(nnx.state(source, nnx.Param)), flat(params), flat(fresh[0])
    stem = ('stem', 'conv_bn', 'conv', 'kernel')
    np.testing.assert_array_equal(got[stem], given[stem].sum(axis=2, keepdims=True))
    for path in (('head', 'kernel'), ('head', 'bias')):  # 10 -> 52 classes: initial values
        np.testing.assert_array_equal(got[path], initial[path])
    for path, value in got.items():
        if path[0] != 'head' and path != stem:
            np.testing.assert_array_equal(value, given[path])
    jax_stats = flat(nnx.state(source, nnx.BatchStat))
    for path, value in flat(batch_stats).items():
        np.testing.assert_array_equal(value, jax_stats[path])

    text = report.text()
    assert text.startswith(f'Initialised from {tmp_path / "w"} (mynet_v2 weights from made.')
    assert 're-initialised (shape differs): head.bias (10,)->(52,), head.kernel' in text
    assert "summed over the source's 3 input channels to 1" in text
    assert 'the source has 10 classes, this run 52' in text
    assert report.record['sha256'] == 'ab' * 32
    assert report.record['not_loaded'] == report.reinitialised


def test_input_conv_adaptation_is_timms():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        transfer.adapt_input_conv(kernel, 1), kernel.sum(2, keepdims=True)
    )
    gray = kernel[:, :, :1]
    rgb = transfer.adapt_input_conv(gray, 3)  # repeated, scaled by 1/3: the same gray response
    np.testing.assert_allclose(rgb, np.repeat(gray, 3, axis=2) / 3, rtol=1e-6)
    five = transfer.adapt_input_conv(kernel, 5)  # timm: repeat to 6, keep 5, times 3/5
    np.testing.assert_allclose(five, np.concatenate([kernel, kernel[:, :, :2]], 2) * 0.6, rtol=1e-6)


def test_run_workdir_loads_its_best_checkpoint(smoke_config, smoke_run):
    smoke_config.init.source = str(smoke_run)
    params, batch_stats, report = transfer.load_initial_variables(
        smoke_config, *fresh_variables(smoke_config)
    )
    run = checkpoint.load_run(smoke_run)
    expected = flat(nnx.state(run.model, nnx.Param))
    assert flat(params).keys() == expected.keys()
    for path, value in flat(params).items():
        np.testing.assert_array_equal(value, expected[path])
    assert report.record == {
        'path': str(smoke_run.absolute()), 'kind': 'run', 'step': run.step,
        'loaded': len(expected) + len(flat(batch_stats)), 'not_loaded': [],
    }  # fmt: skip


def test_params_missing_from_the_source_are_named(smoke_config, tmp_path):
    write_weights(tmp_path / 'w', 'resnet_lite_11', widths=(4, 8), in_channels=1, num_classes=52)
    smoke_config.model = 'resnet_lite_11'
    smoke_config.model_kwargs.widths = (4, 8, 8)  # one more stage: blocks.1 is new
    smoke_config.init.source = str(tmp_path / 'w')
    _, _, report = transfer.load_initial_variables(smoke_config, *fresh_variables(smoke_config))
    assert {name.split('.')[0] + '.' + name.split('.')[1] for name in report.not_in_source} == {
        'blocks.1'
    }
    assert report.reinitialised == [] and report.record['not_loaded'] == report.not_in_source
    assert 'not in the source, left at their initial values: blocks.1.' in report.text()
    assert '... and' in report.text()  # 2 convs, 2 BNs (scale, bias, mean, var): more than shown


def test_mynet_at_another_image_size_gets_a_new_head(smoke_config, tmp_path):
    write_weights(tmp_path / 'w', in_channels=1, num_classes=52, image_size=48)
    smoke_config.init.source = str(tmp_path / 'w')
    _, _, report = transfer.load_initial_variables(smoke_config, *fresh_variables(smoke_config))
    assert [r.split()[0] for r in report.reinitialised] == ['head.kernel']  # the flatten size
    assert 'the source was trained at 48 px, this run uses 32' in report.text()
    assert 'classes' not in report.text()  # the class count is the same


def test_normalization_follows_the_weights_unless_set(smoke_config, tmp_path):
    write_weights(tmp_path / 'w')
    smoke_config.init.source = str(tmp_path / 'w')
    assert (
        transfer.resolve_normalization(smoke_config, channels=3).input.normalization == 'imagenet'
    )
    assert transfer.resolve_normalization(smoke_config, channels=1).input.normalization == 'dataset'
    smoke_config.input.normalization = 'dataset'
    assert transfer.resolve_normalization(smoke_config, channels=3).input.normalization == 'dataset'
    smoke_config.init.source = ''
    smoke_config.input.normalization = ''
    assert transfer.resolve_normalization(smoke_config, channels=3).input.normalization == 'dataset'


# ------------------------------------------------------------------------------------ bad input


def _refused(config, *fragments):
    fresh = fresh_variables(config)
    with pytest.raises(WeightsError) as error:
        transfer.load_initial_variables(config, *fresh)
    for fragment in (config.init.source, *fragments):
        assert fragment in str(error.value)


def test_folder_that_is_neither_weights_nor_run_is_refused(smoke_config, tmp_path):
    smoke_config.init.source = str(tmp_path)
    _refused(smoke_config, 'neither an imported-weights folder', 'python -m flaxcnn.weights import')


def test_flatten_layer_of_another_image_size_is_refused(smoke_config, tmp_path):
    write_weights(
        tmp_path / 'w', 'basic_cnn', in_channels=1, image_size=48, widths=(4, 8), hidden=8
    )
    smoke_config.model, smoke_config.init.source = 'basic_cnn', str(tmp_path / 'w')
    smoke_config.model_kwargs = {'widths': (4, 8), 'hidden': 8}
    _refused(
        smoke_config,
        'hidden.kernel: shape (1152, 8) in the source, (512, 8) here',
        'trained at 48 px and this run uses 32 px',
        '--config.dataset.image_size=48',
    )


def test_weights_of_another_model_are_refused(smoke_config, tmp_path):
    write_weights(tmp_path / 'w', 'resnet_lite_11', widths=(4, 8, 8), in_channels=1)
    smoke_config.model = 'resnet_lite_22'
    smoke_config.model_kwargs.widths = (4, 8, 8)
    smoke_config.init.source = str(tmp_path / 'w')
    _refused(smoke_config, 'holds resnet_lite_11 weights', '--config.model=resnet_lite_11')


def test_other_model_kwargs_are_refused(smoke_config, tmp_path):
    write_weights(tmp_path / 'w', in_channels=1, widths=(8, 16, 24))
    smoke_config.init.source = str(tmp_path / 'w')
    _refused(smoke_config, 'do not fit the source', 'same config.model_kwargs as the source')


def test_damaged_weights_folder_is_refused(smoke_config, tmp_path):
    write_weights(tmp_path / 'w')
    for data in (tmp_path / 'w' / 'state').rglob('*'):
        if data.is_file() and data.stat().st_size > 1000:
            data.write_bytes(data.read_bytes()[:100])
    smoke_config.init.source = str(tmp_path / 'w')
    _refused(smoke_config, 'cannot be read', 'import the weights again')


# ------------------------------------------------------------------------------------ a real run


@pytest.mark.slow  # two training runs
def test_fine_tuning_run_records_its_source_and_resumes_without_reloading(
    tmp_path, smoke_config, smoke_run, capsys
):
    run = checkpoint.load_run(smoke_run)
    weights = tmp_path / 'weights'
    metadata = {
        'model': 'mynet_v2', 'model_kwargs': {'widths': SMOKE_WIDTHS}, 'num_classes': 52,
        'in_channels': 1, 'image_size': 32, 'normalization': 'dataset',
        'source': {'file': 'smoke', 'sha256': 'cd' * 32, 'layout': 'test'},
    }  # fmt: skip
    convert.folder.write(weights, run.model, metadata)
    workdir = tmp_path / 'finetune'
    smoke_config.init.source, smoke_config.finetune.freeze = str(weights), 'backbone'
    smoke_config.num_epochs = 1
    capsys.readouterr()
    training.train_and_evaluate(smoke_config, workdir)
    assert f'Initialised from {weights} (mynet_v2 weights from smoke): 27 arrays loaded.' in (
        capsys.readouterr().err
    )
    summary = json.loads((workdir / 'summary.json').read_text())
    assert summary['init']['sha256'] == 'cd' * 32

    shutil.rmtree(weights / 'state')  # a reload would fail now; weights.json stays readable
    smoke_config.num_epochs = 2
    training.train_and_evaluate(smoke_config, workdir)
    second = capsys.readouterr().err
    assert 'Resuming' in second and 'Initialised' not in second
    assert json.loads((workdir / 'summary.json').read_text())['init'] == summary['init']


# ------------------------------------------------------------------- glyph subsets (the experiment)


def test_glyph_class_subset_holds_the_full_sets_images():
    from flaxcnn.data import glyph_render, glyphs

    labels = glyphs.class_labels('lowercase')
    assert [glyph_render.CLASS_NAMES[i] for i in labels] == list('abdefghijkmnqrty')
    image, label = glyphs._render(17, seed=0, split='train', image_size=24, labels=labels)
    full, full_label = glyph_render.render_sample(0, 'train', 52 + labels[1], 24)  # rank 1, 'b'
    assert label == 1 and glyph_render.CLASS_NAMES[full_label] == 'b'
    np.testing.assert_array_equal(image, full)
    assert glyphs.GlyphsConfig().name == '90px_600-150-150_seed0'  # prepared sets stay valid
    assert glyphs.GlyphsConfig(classes='digits+capitals').name.endswith('_digits+capitals')
    with pytest.raises(
        ValueError, match=r"groups joined by '\+', from digits, capitals, lowercase"
    ):
        glyphs.class_labels('vowels')


def test_init_from_is_accepted_as_the_spelling_of_init_source():
    """ml_collections cannot parse ``init.from`` (a Python keyword); the command line maps it."""
    from flaxcnn import cli

    argv = ['train', '--config.init.from=/w/run', '--config.init.from', '/w/other', '--x=1']
    assert cli._with_aliases(argv) == [
        'train', '--config.init.source=/w/run', '--config.init.source', '/w/other', '--x=1'
    ]
