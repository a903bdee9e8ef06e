"""The train and eval steps and the one inference function, as pure functions of the state.

They are written for one global batch; ``distributed.jit_train_step`` / ``jit_eval_step``
compile them over the device mesh. The recipe's options (``recipes.Recipe``) act here, on the
device: augmentation, mixup/cutmix, label smoothing, the weights' moving average, and the
test-time shifts of ``make_forward``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flaxcnn import recipes

NO_STEP = np.iinfo(np.int32).max
# Folded into a step's key to draw its augmentations, apart from the dropout key itself.
_AUGMENT_STREAM = 0x61756700


def accumulate(sums: dict | None, metrics: dict) -> dict:
    """Adds a step's metrics to running sums (the first non-finite step by minimum)."""
    if sums is None:
        return metrics
    return {
        k: jnp.minimum(sums[k], v) if k == 'first_nonfinite_step' else sums[k] + v
        for k, v in metrics.items()
    }


@flax.struct.dataclass
class TrainState:
    """Everything a train step reads and writes; saved whole in checkpoints."""

    step: jax.Array
    params: nnx.State
    batch_stats: nnx.State
    opt_state: optax.OptState
    rng: jax.Array  # raw uint32 key data; the step's dropout key is fold_in(rng, step)


@flax.struct.dataclass
class EmaTrainState(TrainState):
    """A ``TrainState`` with a moving average of the weights (``ema.decay``). A class of its
    own so that a run without one saves exactly the state it always did."""

    ema_params: nnx.State
    ema_batch_stats: nnx.State


def with_ema_weights(state: EmaTrainState) -> TrainState:
    """``state`` with the moving averages in place of the weights, as the evaluator reads it."""
    return state.replace(params=state.ema_params, batch_stats=state.ema_batch_stats)


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """uint8 images -> float32 ``(x - mean) / std`` per channel, on the device.

    The pipeline ships uint8 (a quarter of the bytes of float32) and XLA fuses this into the
    model's first layer.
    """
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return (images.astype(jnp.float32) - mean) / std


def create_train_state(
    model: nnx.Module, tx: optax.GradientTransformation, seed: int, *, ema: bool = False
) -> tuple[nnx.GraphDef, nnx.GraphDef, TrainState]:
    """Splits ``model`` into train/eval graph definitions and the initial state (an
    ``EmaTrainState`` whose averages start at the initial weights, with ``ema``)."""
    model.eval()
    eval_graphdef, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.train()
    train_graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    fields = {
        'step': jnp.zeros((), jnp.int32),
        'params': params,
        'batch_stats': batch_stats,
        'opt_state': tx.init(params),
        'rng': jax.random.key_data(jax.random.key(seed)),
    }
    if not ema:
        return train_graphdef, eval_graphdef, TrainState(**fields)
    copies = jax.tree.map(jnp.copy, (params, batch_stats))  # own buffers: the state is donated
    state = EmaTrainState(**fields, ema_params=copies[0], ema_batch_stats=copies[1])
    return train_graphdef, eval_graphdef, state


def cross_entropy(
    logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0
) -> jax.Array:
    """Per-example softmax cross entropy against integer ``labels`` [batch] or class
    distributions [batch, classes] (mixed targets), smoothed by ``label_smoothing``."""
    if labels.ndim == 1 and not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if labels.ndim == 1:
        labels = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        labels = optax.smooth_labels(labels, label_smoothing)
    return optax.softmax_cross_entropy(logits, labels)


def ema_decay(decay: float, step: jax.Array) -> jax.Array:
    """The moving average's decay at ``step``: ``decay``, lower while few steps are averaged
    (``(1 + step) / (10 + step)``, as TensorFlow's ``ExponentialMovingAverage`` with
    ``num_updates``), so short runs do not average in the initial weights."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    schedule: Callable[[Any], Any],
    *,
    mean,
    std,
    recipe: recipes.Recipe = recipes.OFF,
    class_weights=None,
) -> Callable:
    """``(state, batch, clock) -> (state, metrics)``: one optimizer update.

    Batches hold uint8 ``image``s, normalized with ``mean``/``std`` per channel, and int32
    ``label``s. ``clock`` is what ``schedule`` reads (the step, or elapsed seconds). Metrics are
    on-device sums: ``loss``, ``correct`` and ``count``, and ``first_nonfinite_step``: this
    step's number if its loss was NaN or infinite, else ``NO_STEP`` (combine with minimum).

    ``recipe``'s augmentation and mixup/cutmix draw from the step's key, so a resumed run
    repeats them exactly; with mixing, ``correct`` counts predictions of each example's
    dominant label. With ``recipe.ema_decay`` the state is an ``EmaTrainState``.
    ``class_weights`` (one per class) weight each example's loss, normalized to mean 1.
    """
    mixing = recipe.mixup_alpha or recipe.cutmix_alpha

    def train_step(state: TrainState, batch: dict[str, jax.Array], clock: jax.Array):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        augment_key, mix_key = jax.random.split(jax.random.fold_in(key, _AUGMENT_STREAM))
        labels = batch['label']
        images = normalize(recipes.augment(augment_key, batch['image'], recipe), mean, std)
        if mixing:
            images, partner_labels, weight = recipes.mix(
                mix_key,
                images,
                labels,
                mixup_alpha=recipe.mixup_alpha,
                cutmix_alpha=recipe.cutmix_alpha,
            )

        if class_weights is not None:  # inverse class frequencies (class_balance), mean 1
            per_class = jnp.asarray(class_weights, jnp.float32)
            example_weights = per_class[labels]
            if mixing:
                example_weights = (
                    weight * example_weights + (1 - weight) * per_class[partner_labels]
                )
            example_weights = example_weights / jnp.mean(example_weights)

        def loss_fn(params, batch_stats):
            model = nnx.merge(graphdef, params, batch_stats, copy=True)
            logits = model(images, rngs=key)
            targets = (
                recipes.mixed_targets(labels, partner_labels, weight, logits.shape[-1])
                if mixing
                else labels
            )
            losses = cross_entropy(logits, targets, label_smoothing=recipe.label_smoothing)
            if class_weights is not None:
                losses = losses * example_weights
            return losses.mean(), (logits, nnx.state(model, nnx.BatchStat))

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats
        )
        opt_state = state.opt_state
        opt_state.hyperparams['learning_rate'] = jnp.asarray(schedule(clock), jnp.float32)
        updates, opt_state = tx.update(grads, opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        count = labels.shape[0]
        dominant = jnp.where(weight >= 0.5, labels, partner_labels) if mixing else labels
        metrics = {
            'loss': loss * count,
            'correct': jnp.sum(jnp.argmax(logits, -1) == dominant),
            'count': jnp.asarray(count, jnp.int32),
            'first_nonfinite_step': jnp.where(jnp.isfinite(loss), NO_STEP, state.step + 1),
        }
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        if recipe.ema_decay:
            ema_params, ema_batch_stats = optax.incremental_update(
                (params, batch_stats),
                (state.ema_params, state.ema_batch_stats),
                1.0 - ema_decay(recipe.ema_decay, state.step),
            )
            new_state = new_state.replace(ema_params=ema_params, ema_batch_stats=ema_batch_stats)
        return new_state, metrics

    return train_step


def inference_variables(source: TrainState | nnx.Module) -> tuple[nnx.State, nnx.State]:
    """(params, batch statistics) of a train state or a model, as ``make_forward`` reads them."""
    if isinstance(source, nnx.Module):
        _, params, batch_stats = nnx.split(source, nnx.Param, nnx.BatchStat)
        return params, batch_stats
    return source.params, source.batch_stats


def make_forward(graphdef: nnx.GraphDef, *, mean, std, tta: int = 0) -> Callable:
    """``(variables, images) -> logits``: the model ``graphdef`` (in eval mode) on uint8 images.

    ``variables`` are ``inference_variables``; images are normalized with ``mean``/``std`` per
    channel as in training. With ``tta`` (``eval.tta``) the logits are the mean over the images
    and their copies shifted by ``tta`` pixels each way (``recipes.shifted_views``). Evaluation
    and prediction both go through this function.
    """

    def forward(variables: tuple[nnx.State, nnx.State], images: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, *variables)
        if not tta:
            return model(normalize(images, mean, std))
        views = recipes.shifted_views(images, tta)
        return sum(model(normalize(view, mean, std)) for view in views) / len(views)

    return forward


def make_eval_step(forward: Callable, num_classes: int, top_k: int | None = None) -> Callable:
    """``(variables, batch) -> metrics``: loss sum, count and confusion counts [true, predicted];
    with ``top_k``, how many labels are among the k highest logits; for two classes, each
    example's ``probabilities`` with its ``label`` and ``mask`` (for ROC curves).

    ``forward`` is a ``make_forward`` function. Batches are as for ``make_train_step`` plus a
    boolean ``mask`` of the real examples.
    """

    def eval_step(variables: tuple[nnx.State, nnx.State], batch: dict[str, jax.Array]):
        logits = forward(variables, batch['image'])
        mask = batch['mask']
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
        true = jax.nn.one_hot(batch['label'], num_classes, dtype=jnp.int32) * mask[:, None]
        pred = jax.nn.one_hot(jnp.argmax(logits, -1), num_classes, dtype=jnp.int32)
        out = {
            'loss': jnp.sum(losses * mask),
            'count': jnp.sum(mask, dtype=jnp.int32),
            'confusion': true.T @ pred,
        }
        if top_k:
            _, top = jax.lax.top_k(logits, top_k)
            hit = jnp.any(top == batch['label'][:, None], axis=-1)
            out['top_k_correct'] = jnp.sum(hit & mask, dtype=jnp.int32)
        if num_classes == 2:
            out['examples'] = {
                'probabilities': jax.nn.softmax(logits),
                'label': batch['label'],
                'mask': mask,
            }
        return out

    return eval_step
