"""input.class_balance: inverse-frequency loss weights, evenly drawn classes that resume exactly,
and both raising minority recall on a learnable imbalanced toy problem."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from flaxcnn import class_balance, steps
from flaxcnn.data import pipeline


def test_class_weights_are_inverse_frequency_and_one_when_balanced():
    weights = class_balance.class_weights([90, 10, 0], 'weighted_loss')
    np.testing.assert_allclose(weights, [100 / (2 * 90), 100 / (2 * 10), 0.0], rtol=1e-6)
    assert np.dot(weights, [90, 10, 0]) == pytest.approx(100)  # as many "examples" as before
    np.testing.assert_allclose(class_balance.class_weights([5, 5], 'weighted_loss'), [1, 1])
    assert class_balance.class_weights([90, 10], 'none') is None
    assert class_balance.class_weights([90, 10], 'oversample') is None
    with pytest.raises(ValueError, match="class_balance='smote'"):
        class_balance.class_weights([1, 1], 'smote')


def _source(counts):
    labels = np.repeat(np.arange(len(counts)), counts)
    return [{'image': np.full((4, 4, 1), i, np.uint8), 'label': y} for i, y in enumerate(labels)]


def test_oversampling_draws_classes_evenly_covers_every_example_and_resumes_exactly():
    source = _source([45, 5, 14])
    ds = pipeline.train_dataset(source, batch_size=8, seed=3, class_balance='oversample')
    epoch = len(source) // 8  # batches per epoch, as without oversampling
    drawn = np.concatenate([ds[i]['image'][:, 0, 0, 0] for i in range(6 * epoch)])
    labels = np.asarray([source[i]['label'] for i in drawn])
    counts = np.bincount(labels[: epoch * 8])
    assert counts.max() - counts.min() <= 1  # each epoch: the classes evenly
    assert set(drawn) == set(range(len(source)))  # every example, the majority's too, in time
    minority = drawn[labels == 1]
    assert all(np.bincount(minority[i : i + 5], minlength=50)[45:50].max() == 1 for i in (0, 5))
    # A fresh pipeline (a resumed run) gives the same batches from any step on.
    again = pipeline.train_dataset(source, batch_size=8, seed=3, class_balance='oversample')
    resumed = pipeline.train_batches(again, 2 * epoch + 1, num_workers=0, prefetch_batches=1)
    for i in range(2 * epoch + 1, 3 * epoch):
        np.testing.assert_array_equal(next(resumed)['image'], ds[i]['image'])
    other = pipeline.train_dataset(source, batch_size=8, seed=4, class_balance='oversample')
    assert not np.array_equal(other[0]['image'], ds[0]['image'])


class _Linear(nnx.Module):
    """Logistic regression on the mean of the image: the toy's whole model."""

    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(1, 2, rngs=rngs)

    def __call__(self, x, *, rngs=None):
        return self.linear(x.mean(axis=(1, 2, 3))[:, None])


def _toy(n: int, minority_share: float, seed: int):
    """Brightness tells the classes apart, with overlap: class 1 (the minority) is brighter."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < minority_share).astype(np.int64)
    brightness = np.where(labels == 1, 140.0, 110.0) + rng.normal(0, 15, n)
    images = np.clip(brightness, 0, 255)[:, None, None, None] * np.ones((1, 4, 4, 1))
    return [{'image': im.astype(np.uint8), 'label': y} for im, y in zip(images, labels)]


def _minority_recall(mode: str) -> float:
    train, test = _toy(800, 0.1, 0), _toy(400, 0.5, 1)
    model = _Linear(nnx.Rngs(0))
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.05)
    graphdef, eval_graphdef, state = steps.create_train_state(model, tx, seed=0)
    counts = np.bincount([r['label'] for r in train])
    step = jax.jit(
        steps.make_train_step(
            graphdef,
            tx,
            lambda _: 0.05,
            mean=(125.0,),
            std=(20.0,),
            class_weights=class_balance.class_weights(counts, mode),
        )
    )
    ds = pipeline.train_dataset(
        train, batch_size=50, seed=0, class_balance='oversample' if mode == 'oversample' else 'none'
    )
    for i in range(160):
        state, _ = step(state, pipeline._Int32Labels().map(ds[i]), jnp.float32(0))
    forward = steps.make_forward(eval_graphdef, mean=(125.0,), std=(20.0,))
    images = np.stack([r['image'] for r in test])
    predicted = np.argmax(forward(steps.inference_variables(state), images), -1)
    labels = np.asarray([r['label'] for r in test])
    return float((predicted[labels == 1] == 1).mean())


def test_weighted_loss_and_oversampling_raise_minority_recall():
    plain = _minority_recall('none')
    assert _minority_recall('weighted_loss') > plain + 0.2
    assert _minority_recall('oversample') > plain + 0.2
