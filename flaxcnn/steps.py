"""The train and eval steps and the one inference function, as pure functions of the state.

They are written for one global batch; ``distributed.jit_train_step`` / ``jit_eval_step``
compile them over the device mesh.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


NO_STEP = np.iinfo(np.int32).max


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


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """uint8 images -> float32 ``(x - mean) / std`` per channel, on the device.

    The pipeline ships uint8 (a quarter of the bytes of float32) and XLA fuses this into the
    model's first layer.
    """
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return (images.astype(jnp.float32) - mean) / std


def create_train_state(
    model: nnx.Module, tx: optax.GradientTransformation, seed: int
) -> tuple[nnx.GraphDef, nnx.GraphDef, TrainState]:
    """Splits ``model`` into train/eval graph definitions and the initial state."""
    model.eval()
    eval_graphdef, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.train()
    train_graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(seed)),
    )
    return train_graphdef, eval_graphdef, state


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    schedule: Callable[[Any], Any],
    *,
    mean,
    std,
    class_weights=None,
) -> Callable:
    """``(state, batch, clock) -> (state, metrics)``: one optimizer update.

    Batches hold uint8 ``image``s, normalized with ``mean``/``std`` per channel, and int32
    ``label``s. ``clock`` is what ``schedule`` reads (the step, or elapsed seconds). Metrics are
    on-device sums: ``loss``, ``correct`` and ``count``, and ``first_nonfinite_step``: this
    step's number if its loss was NaN or infinite, else ``NO_STEP`` (combine with minimum).
    """

    def train_step(state: TrainState, batch: dict[str, jax.Array], clock: jax.Array):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

        def loss_fn(params, batch_stats):
            model = nnx.merge(graphdef, params, batch_stats, copy=True)
            logits = model(normalize(batch['image'], mean, std), rngs=key)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
            if class_weights is not None:  # per class (class_balance.class_weights)
                w = jnp.asarray(class_weights)[batch['label']]
                losses = losses * w * (w.size / jnp.sum(w))
            return losses.mean(), (logits, nnx.state(model, nnx.BatchStat))

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats
        )
        opt_state = state.opt_state
        opt_state.hyperparams['learning_rate'] = jnp.asarray(schedule(clock), jnp.float32)
        updates, opt_state = tx.update(grads, opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        count = batch['label'].shape[0]
        metrics = {
            'loss': loss * count,
            'correct': jnp.sum(jnp.argmax(logits, -1) == batch['label']),
            'count': jnp.asarray(count, jnp.int32),
            'first_nonfinite_step': jnp.where(jnp.isfinite(loss), NO_STEP, state.step + 1),
        }
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        return new_state, metrics

    return train_step


def inference_variables(source: TrainState | nnx.Module) -> tuple[nnx.State, nnx.State]:
    """(params, batch statistics) of a train state or a model, as ``make_forward`` reads them."""
    if isinstance(source, nnx.Module):
        _, params, batch_stats = nnx.split(source, nnx.Param, nnx.BatchStat)
        return params, batch_stats
    return source.params, source.batch_stats


def make_forward(graphdef: nnx.GraphDef, *, mean, std) -> Callable:
    """``(variables, images) -> logits``: the model ``graphdef`` (in eval mode) on uint8 images.

    ``variables`` are ``inference_variables``; images are normalized with ``mean``/``std`` per
    channel as in training. Evaluation and prediction both go through this function.
    """

    def forward(variables: tuple[nnx.State, nnx.State], images: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, *variables)
        return model(normalize(images, mean, std))

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
