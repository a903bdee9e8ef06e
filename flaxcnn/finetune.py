"""Fine-tuning controls (``config.finetune``): frozen parameters, a slower backbone, a head warm-up.

Every parameter is in one group (``parameter_groups``): ``head`` (its model class's ``HEAD``),
``frozen`` (``finetune.freeze``: 'none'; 'backbone', all but the head; or comma-separated
parameter path prefixes such as 'stem,blocks.0') or ``backbone`` (the rest).

``wrap_optimizer`` runs ``optim.create_optimizer``'s optimizer at a unit learning rate on the
trained groups only: frozen parameters have no optimizer state and get a zero update, and
anything the optimizer does over all its parameters (a global gradient norm) sees the trained
ones. Its update is then scaled per group: the head by the injected learning rate (so
schedules, which set it every step, still work), the backbone by that times
``backbone_lr_scale``, and by 0 for the first ``head_warmup_steps`` updates, while only the
head learns (the backbone's optimizer state still follows its gradients then). This needs the
update to be linear in the learning rate, as adam's, adamw's and sgd's are.

Frozen BatchNorm layers also run on their running statistics in training
(``freeze_batch_norms``), so the frozen part is one fixed function, the same in training and
evaluation, and its statistics stay as loaded. Restoring the statistics after each step instead
would keep them too, but would normalize with batch statistics while training: the head would
learn on features that evaluation never shows it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from flaxcnn.config import ConfigError

HEAD, BACKBONE, FROZEN = 'head', 'backbone', 'frozen'
TRAINED = 'trained'


def frozen_prefixes(config: ml_collections.ConfigDict) -> list[tuple[str, ...]] | None:
    """The parameter path prefixes ``finetune.freeze`` names; None for 'backbone'."""
    freeze = config.finetune.freeze.strip()
    if freeze == 'backbone':
        return None
    if freeze == 'none':
        return []
    return [tuple(p.strip().split('.')) for p in freeze.split(',') if p.strip()]


def parameter_groups(config: ml_collections.ConfigDict, model: nnx.Module) -> nnx.State:
    """A tree shaped like ``model``'s parameters holding each one's group name."""
    head = tuple(map(str, type(model).HEAD))
    flat = [
        (tuple(map(str, path)), path, v)
        for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    ]
    prefixes = frozen_prefixes(config)
    unmatched = [p for p in prefixes or () if not any(n[: len(p)] == p for n, _, _ in flat)]
    if unmatched:
        tops = sorted({n[0] for n, _, _ in flat})
        raise ConfigError(
            f'config.finetune.freeze={config.finetune.freeze!r}: no parameter of {config.model} '
            f'is under {", ".join(".".join(p) for p in unmatched)}; its parameter paths start with '
            f'{", ".join(tops)} (e.g. {".".join(flat[-1][0])}).'
        )

    def group(name: tuple[str, ...]) -> str:
        under_head = name[: len(head)] == head
        if (not under_head) if prefixes is None else any(name[: len(p)] == p for p in prefixes):
            return FROZEN
        return HEAD if under_head else BACKBONE

    return nnx.from_flat_state([(path, v.copy(group(name))) for name, path, v in flat])


def wrap_optimizer(
    create_optimizer: Callable[[ml_collections.ConfigDict], optax.GradientTransformation],
    config: ml_collections.ConfigDict,
    groups: nnx.State,
) -> optax.GradientTransformation:
    """``create_optimizer(config)`` with the groups' freezing and learning-rate scales; the
    plain optimizer when ``config.finetune`` asks for neither (checkpoints stay compatible)."""
    ft = config.finetune
    frozen = FROZEN in jax.tree.leaves(groups)
    if not frozen and ft.backbone_lr_scale == 1 and not ft.head_warmup_steps:
        return create_optimizer(config)
    unit_config = config.copy_and_resolve_references()
    unit_config.optimizer.lr = 1.0
    unit = create_optimizer(unit_config)
    trained = jax.tree.map(lambda g: FROZEN if g == FROZEN else TRAINED, groups)
    warmup, scale = ft.head_warmup_steps, ft.backbone_lr_scale

    def make(learning_rate, backbone_scale):
        factors = {HEAD: learning_rate, BACKBONE: learning_rate * backbone_scale, FROZEN: 0.0}
        return optax.chain(
            optax.multi_transform({TRAINED: unit, FROZEN: optax.set_to_zero()}, trained),
            optax.stateless(
                lambda updates, params=None: jax.tree.map(
                    lambda g, u: u * factors[g], groups, updates
                )
            ),
        )

    return optax.inject_hyperparams(make)(
        learning_rate=config.optimizer.lr,
        backbone_scale=lambda count: jnp.where(count < warmup, 0.0, scale),
    )


def freeze_batch_norms(graphdef: nnx.GraphDef, state, groups: nnx.State) -> nnx.GraphDef:
    """The train ``graphdef`` with every BatchNorm whose scale is frozen on its running
    statistics (``state``: a ``TrainState`` of that graph)."""
    frozen = {path for path, v in nnx.to_flat_state(groups) if v.get_value() == FROZEN}
    if not frozen:
        return graphdef
    model = nnx.merge(graphdef, state.params, state.batch_stats)
    for path, module in nnx.iter_modules(model):
        if isinstance(module, nnx.BatchNorm) and (*path, 'scale') in frozen:
            module.use_running_average = True
    return nnx.graphdef(model)
