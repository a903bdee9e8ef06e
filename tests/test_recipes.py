"""The recipe options: each config field reaches the step and does what it says; a run with all
of them on resumes bit for bit; validation picks the better of raw and averaged weights."""

import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from flaxcnn import checkpoint, evaluation, models, optim, recipes, steps, training
from flaxcnn.config import default_config

from helpers import final_state, records, saved_steps

ALL_ON = {
    'loss.label_smoothing': 0.1,
    'ema.decay': 0.9,
    'optimizer.clip_grad_norm': 1.0,
    'input.mixup_alpha': 0.4,
    'input.cutmix_alpha': 1.0,
    'input.random_crop_pad': 2,
    'input.rotation_degrees': 5.0,
    'input.random_scale': 0.1,
    'input.flip': True,
    'eval.tta': 1,
    'schedule.name': 'one_cycle',
}


def _set(config, overrides: dict) -> None:
    for path, value in overrides.items():
        section, field = path.split('.')
        config[section][field] = value


def _images(n=8, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), np.uint8)


def _model():
    return models.create_model(
        'mynet_v2', num_classes=4, in_channels=1, image_size=32, rngs=nnx.Rngs(0), widths=(4, 8)
    )


@functools.cache
def _compiled_step(recipe: recipes.Recipe):
    """(jitted train step, initial state) of a tiny MyNet with ``recipe``, compiled once."""
    tx = optim.create_optimizer(default_config())
    graphdef, _, state = steps.create_train_state(_model(), tx, seed=0, ema=bool(recipe.ema_decay))
    train_step = steps.make_train_step(
        graphdef, tx, optax.constant_schedule(0.01), mean=(128.0,), std=(64.0,), recipe=recipe
    )
    return jax.jit(train_step), state


def _one_step(recipe: recipes.Recipe, step: int = 0):
    """(state before, state after, metrics) of one step from the initial weights on a fixed
    batch of 8, as step number ``step``."""
    train_step, state = _compiled_step(recipe)
    state = state.replace(step=jnp.asarray(step, jnp.int32))
    batch = {'image': _images(), 'label': np.array([0, 1, 2, 3, 0, 1, 2, 3], np.int32)}
    after, metrics = train_step(state, batch, np.float32(0))
    return state, after, jax.device_get(metrics)


def _by_path(tree) -> dict:
    """Leaves by their key path as strings, without the variables' ``value`` level (Orbax
    reads list indices back as strings and nnx variables as ``{'value': array}``)."""

    def names(path):
        return tuple(str(getattr(key, 'key', getattr(key, 'idx', key))) for key in path)

    return {
        tuple(n for n in names(path) if n != 'value'): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def test_every_option_is_read_from_its_config_field_and_off_by_default():
    config = default_config()
    assert recipes.Recipe.from_config(config) == recipes.OFF
    _set(config, ALL_ON)
    assert recipes.Recipe.from_config(config) == recipes.Recipe(
        label_smoothing=0.1,
        mixup_alpha=0.4,
        cutmix_alpha=1.0,
        random_crop_pad=2,
        rotation_degrees=5.0,
        random_scale=0.1,
        flip=True,
        ema_decay=0.9,
        tta=1,
    )
    saved_before_the_fields = default_config()  # a run saved before the fields existed
    for section in ('loss', 'ema', 'eval'):
        del saved_before_the_fields[section]
    assert recipes.Recipe.from_config(saved_before_the_fields) == recipes.OFF


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = jnp.array([0, 2])
    log_p = jax.nn.log_softmax(logits)
    plain = -log_p[jnp.arange(2), labels]
    np.testing.assert_allclose(steps.cross_entropy(logits, labels), plain, rtol=1e-6)
    smoothed = 0.9 * plain + 0.1 * -log_p.mean(-1)
    np.testing.assert_allclose(
        steps.cross_entropy(logits, labels, label_smoothing=0.1), smoothed, rtol=1e-6
    )
    soft = jnp.array([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]])  # mixed targets
    np.testing.assert_allclose(
        steps.cross_entropy(logits, soft), -(soft * log_p).sum(-1), rtol=1e-6
    )


@pytest.mark.parametrize(
    'recipe',
    [
        recipes.Recipe(label_smoothing=0.2),
        recipes.Recipe(mixup_alpha=0.4),
        recipes.Recipe(cutmix_alpha=1.0),
        recipes.Recipe(random_crop_pad=3),
        recipes.Recipe(rotation_degrees=10.0),
        recipes.Recipe(random_scale=0.2),
        recipes.Recipe(flip=True),
    ],
    ids=['label_smoothing', 'mixup', 'cutmix', 'random_crop', 'rotation', 'scale', 'flip'],
)
def test_each_training_option_changes_the_step_and_repeats_at_the_same_step(recipe):
    plain_metrics = _one_step(recipes.OFF)[2]
    _, after, metrics = _one_step(recipe)
    assert metrics['loss'] != plain_metrics['loss']
    _, again, metrics_again = _one_step(recipe)  # keyed by the step: the same draw
    assert metrics_again['loss'] == metrics['loss']
    jax.tree.map(np.testing.assert_array_equal, again.params, after.params)
    if recipe.label_smoothing == 0:  # a random option draws anew at another step
        assert _one_step(recipe, step=1)[2]['loss'] != metrics['loss']


def test_the_moving_average_follows_params_and_batch_statistics():
    before, after, _ = _one_step(recipes.Recipe(ema_decay=0.99))
    assert isinstance(after, steps.EmaTrainState)
    decay = 0.1  # the warm-up's (1 + 0) / (10 + 0), below 0.99
    expected = jax.tree.map(
        lambda new, old: decay * old + (1 - decay) * new,
        (after.params, after.batch_stats),
        (before.ema_params, before.ema_batch_stats),
    )
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7),
        (after.ema_params, after.ema_batch_stats),
        expected,
    )
    assert not all(  # the batch statistics moved, so their average did
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(after.ema_batch_stats), jax.tree.leaves(before.ema_batch_stats)
        )
    )
    assert float(steps.ema_decay(0.99, jnp.asarray(10_000))) == pytest.approx(0.99)
    view = steps.with_ema_weights(after)
    assert view.params is after.ema_params and view.batch_stats is after.ema_batch_stats


def test_a_state_without_moving_average_saves_what_it_always_did():
    tx = optim.create_optimizer(default_config())
    _, _, plain = steps.create_train_state(_model(), tx, seed=0)
    _, _, with_ema = steps.create_train_state(_model(), tx, seed=0, ema=True)
    assert type(plain) is steps.TrainState
    fields = [jax.tree_util.keystr(p[:1]) for p, _ in jax.tree_util.tree_leaves_with_path(plain)]
    assert sorted(set(fields)) == ['.batch_stats', '.opt_state', '.params', '.rng', '.step']
    jax.tree.map(np.testing.assert_array_equal, with_ema.ema_params, with_ema.params)
    leaves = jax.tree.leaves((with_ema.params, with_ema.ema_params))
    half = len(leaves) // 2
    assert all(a is not b for a, b in zip(leaves[:half], leaves[half:]))  # own buffers


def test_gradient_clipping_bounds_the_global_norm():
    config = default_config()
    config.optimizer.name, config.optimizer.lr, config.optimizer.momentum = 'sgd', 1.0, 0.0
    params = {'w': jnp.zeros(4)}
    grads = {'w': jnp.full(4, 10.0)}  # global norm 20
    for clip, norm in ((0.0, 20.0), (2.0, 2.0)):
        config.optimizer.clip_grad_norm = clip
        tx = optim.create_optimizer(config)
        updates, state = tx.update(grads, tx.init(params), params)
        assert float(optax.global_norm(updates)) == pytest.approx(norm)
        assert 'learning_rate' in state.hyperparams  # still injectable


def test_mixup_blends_whole_images_and_targets():
    images = jnp.asarray(_images(), jnp.float32)
    labels = jnp.arange(8) % 4
    mixed, partners, weight = recipes.mix(
        jax.random.key(0), images, labels, mixup_alpha=0.4, cutmix_alpha=0.0
    )
    assert 0 < float(weight) < 1
    np.testing.assert_allclose(mixed, weight * images + (1 - weight) * images[::-1], rtol=1e-6)
    np.testing.assert_array_equal(partners, labels[::-1])
    targets = recipes.mixed_targets(labels, partners, weight, 4)
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets[0, 0], weight, rtol=1e-6)  # label 0, partner label 3


def test_cutmix_pastes_a_box_whose_area_is_the_partner_share():
    images = jnp.broadcast_to(jnp.arange(8.0)[:, None, None, None], (8, 32, 32, 1))  # i in image i
    labels = jnp.arange(8) % 4
    for seed in range(5):
        mixed, _, weight = recipes.mix(
            jax.random.key(seed), images, labels, mixup_alpha=0.0, cutmix_alpha=1.0
        )
        box = np.asarray(mixed[0, :, :, 0] == 7.0)  # image 0's pixels from its partner, 7
        assert ((mixed[0] == 0.0) | (mixed[0] == 7.0)).all()
        rows, cols = np.nonzero(box)
        if rows.size:  # one rectangle
            assert box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert 1 - float(weight) == pytest.approx(box.mean())
        np.testing.assert_array_equal(mixed[1, :, :, 0] == 6.0, box)  # the same box for all


def test_with_mixup_and_cutmix_each_batch_uses_one_of_them():
    images = jnp.asarray(_images(), jnp.float32)
    labels = jnp.arange(8) % 4
    kinds = set()
    for seed in range(12):
        mixed, _, weight = recipes.mix(
            jax.random.key(seed), images, labels, mixup_alpha=0.4, cutmix_alpha=1.0
        )
        blended = np.allclose(mixed, weight * images + (1 - weight) * images[::-1], rtol=1e-6)
        pasted = bool(jnp.all((mixed == images) | (mixed == images[::-1])))
        assert blended != pasted
        kinds.add('mixup' if blended else 'cutmix')
    assert kinds == {'mixup', 'cutmix'}


def test_random_crop_translates_each_image_within_the_pad():
    images = jnp.asarray(
        np.arange(8 * 12 * 12).reshape(8, 12, 12, 1) % 251, jnp.uint8
    )  # no two windows alike
    pad = 2
    cropped = recipes.random_crop(jax.random.key(0), images, pad)
    padded = np.asarray(recipes.pad_edges(images, pad))
    offsets = set()
    for i in range(8):
        found = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if np.array_equal(cropped[i], padded[i, dy : dy + 12, dx : dx + 12])
        ]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 1  # drawn per image
    np.testing.assert_array_equal(padded[:, :2, 2:-2], np.repeat(images[:, :1], 2, axis=1))


def _bar_image(size=32):
    image = np.full((size, size, 1), 255, np.uint8)
    image[4:28, 6:10] = 0  # a dark vertical bar on the left of a white background
    return image


def test_rotation_turns_by_a_small_angle_and_never_mirrors():
    images = jnp.asarray(np.stack([_bar_image()] * 8))
    rotated = np.asarray(recipes.random_affine(jax.random.key(0), images, 5.0, 0.0))
    assert rotated.shape == images.shape and rotated.dtype == np.float32
    for out in rotated[..., 0]:
        dark = np.argwhere(out < 128)
        assert dark[:, 1].mean() < 12  # still on the left: turned a little, never mirrored
        assert not np.array_equal(out, images[0, ..., 0])
        assert out[0, 16] == 255 and out[31, 0] == 255  # the border's colour comes in
        rows = dark[:, 0]
        slope = np.polyfit(rows, dark[:, 1], 1)[0]  # the bar's tilt: tan of the angle
        assert abs(np.degrees(np.arctan(slope))) <= 5.5
    assert len({out.tobytes() for out in rotated}) == 8  # an angle per image
    unchanged = recipes.random_affine(jax.random.key(0), images, 0.0, 0.0)
    np.testing.assert_allclose(unchanged, images, atol=1e-4)  # no angle, no scale: identity


def test_scaling_zooms_about_the_centre_within_its_range():
    image = np.full((33, 33, 1), 255, np.uint8)
    image[12:21, 12:21] = 0  # a 9-pixel dark square in the middle
    images = jnp.asarray(np.stack([image] * 16))
    scaled = np.asarray(recipes.random_affine(jax.random.key(1), images, 0.0, 0.3))
    sides = [np.sqrt((out < 128).sum()) for out in scaled[..., 0]]
    assert min(sides) >= 9 * 0.7 - 1 and max(sides) <= 9 * 1.3 + 1
    assert min(sides) < 8 and max(sides) > 10  # both ways
    for out in scaled[..., 0]:
        dark = np.argwhere(out < 128)
        np.testing.assert_allclose(dark.mean(0), [16, 16], atol=0.5)  # about the centre


def test_flip_mirrors_about_half_of_the_images():
    images = jnp.asarray(np.stack([_bar_image()] * 64))
    flipped = np.asarray(recipes.random_flip(jax.random.key(0), images))
    mirrored = [np.array_equal(f, images[0, :, ::-1]) for f in flipped]
    kept = [np.array_equal(f, images[0]) for f in flipped]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 16 < sum(mirrored) < 48


def test_tta_averages_the_logits_over_the_shifted_views():
    model = _model()
    model.eval()
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    images = _images()
    plain = steps.make_forward(graphdef, mean=(128.0,), std=(64.0,))
    tta = steps.make_forward(graphdef, mean=(128.0,), std=(64.0,), tta=2)
    views = recipes.shifted_views(jnp.asarray(images), 2)
    assert len(views) == 5
    np.testing.assert_array_equal(views[0], images)
    np.testing.assert_array_equal(views[1][:, 2:], images[:, :-2])  # moved down by 2
    np.testing.assert_array_equal(views[4][:, :, :-2], images[:, :, 2:])  # moved left by 2
    expected = sum(plain((params, batch_stats), v) for v in views) / 5
    np.testing.assert_allclose(tta((params, batch_stats), images), expected, rtol=1e-5)
    assert not np.allclose(expected, plain((params, batch_stats), images))


def test_one_cycle_spans_the_epochs_or_the_time_budget():
    config = default_config()
    config.optimizer.lr, config.num_epochs, config.schedule.name = 0.1, 10, 'one_cycle'
    by_step = optim.create_schedule(config, steps_per_epoch=10)  # 100 steps, peak at 30
    assert by_step.clock == 'step'
    np.testing.assert_allclose([by_step.fn(0), by_step.fn(30)], [0.1 / 25, 0.1], rtol=1e-5)
    assert by_step.fn(15) < by_step.fn(30) and by_step.fn(60) < by_step.fn(30)
    assert float(by_step.fn(100)) == pytest.approx(0.1 / 25e4, rel=1e-3)
    config.time_budget_s, config.schedule.peak_fraction = 300.0, 0.2
    by_time = optim.create_schedule(config, steps_per_epoch=10)
    assert by_time.clock == 'seconds'
    np.testing.assert_allclose([by_time.fn(0.0), by_time.fn(60.0)], [0.1 / 25, 0.1], rtol=1e-5)
    assert float(by_time.fn(300.0)) == pytest.approx(0.1 / 25e4, rel=1e-3)


@pytest.mark.slow
def test_a_run_with_every_option_on_resumes_bit_for_bit(smoke_config, tmp_path, capsys):
    _set(smoke_config, ALL_ON)
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    summary = training.train_and_evaluate(smoke_config, whole)
    # What a SIGKILL after the mid-epoch save of step 9 leaves (tests/test_crash_safety.py
    # covers the kills themselves): that checkpoint and nothing newer.
    shutil.copytree(whole, resumed)
    shutil.rmtree(resumed / 'checkpoints' / '12')
    assert saved_steps(resumed)[-1] == 9
    again = training.train_and_evaluate(smoke_config, resumed)
    assert f'Resuming {resumed} from step 9.' in capsys.readouterr().err
    step, state = final_state(resumed)
    assert step == 12 and 'ema_params' in state
    jax.tree.map(np.testing.assert_array_equal, state, final_state(whole)[1])
    last, last_again = records(whole)[-1], records(resumed)[-1]
    for key in ('valid_loss', 'valid_accuracy', 'valid_loss_ema', 'valid_accuracy_ema'):
        assert last_again[key] == last[key], key
    for key in ('test_accuracy', 'test_loss', 'best_step', 'best_weights', 'best_valid_accuracy'):
        assert again[key] == summary[key], key
    best = next(r for r in records(whole) if r['step'] == summary['best_step'])
    assert summary['best_valid_accuracy'] == max(best['valid_accuracy'], best['valid_accuracy_ema'])
    better = 'ema' if best['valid_accuracy_ema'] > best['valid_accuracy'] else 'raw'
    assert summary['best_weights'] == better


@pytest.mark.slow
def test_the_averaged_weights_when_better_are_checkpointed_as_best_and_tested(
    smoke_config, tmp_path, monkeypatch
):
    smoke_config.num_epochs, smoke_config.ema.decay, smoke_config.eval.tta = 1, 0.9, 1
    monkeypatch.setattr(  # the tiny run's averages rarely win on their own
        training, '_better_weights', lambda valid, ema: ('ema', ema['accuracy'])
    )
    forwards, evaluated = [], []
    make_forward, run = steps.make_forward, evaluation.Evaluator.run

    def spy_make_forward(*args, **kwargs):
        forwards.append(kwargs)
        return make_forward(*args, **kwargs)

    def spy_run(self, state, split):
        evaluated.append((split, jax.device_get(state.params)))
        return run(self, state, split)

    monkeypatch.setattr(steps, 'make_forward', spy_make_forward)
    monkeypatch.setattr(evaluation.Evaluator, 'run', spy_run)
    summary = training.train_and_evaluate(smoke_config, tmp_path)
    assert forwards[0]['tta'] == 1
    assert summary['best_weights'] == 'ema' and summary['best_step'] == 6
    assert records(tmp_path)[0]['valid_accuracy_ema'] == summary['best_valid_accuracy']
    ckpts = checkpoint.Checkpoints(tmp_path)
    assert ckpts.read_meta(6)['weights'] == 'ema'
    ckpts.close()
    _, saved = final_state(tmp_path)
    split, tested = evaluated[-1]
    assert split == 'test'
    tested, averaged = _by_path(nnx.to_pure_dict(tested)), _by_path(saved['ema_params'])
    assert tested.keys() == averaged.keys()
    for path, array in tested.items():
        np.testing.assert_array_equal(array, averaged[path])

    run = checkpoint.load_run(tmp_path)  # evaluate and predict: the same weights, with TTA
    assert run.step == 6 and run.forward is not None and forwards[-1]['tta'] == 1
    loaded = _by_path(nnx.to_pure_dict(nnx.state(run.model, nnx.Param)))
    assert loaded.keys() == averaged.keys()
    for path, array in loaded.items():
        np.testing.assert_array_equal(array, averaged[path])

    monkeypatch.undo()  # resuming without the average is refused before any work
    smoke_config.num_epochs, smoke_config.ema.decay = 2, 0.0
    with pytest.raises(checkpoint.RunMismatchError, match='ema.decay on: True -> False'):
        training.train_and_evaluate(smoke_config, tmp_path)
