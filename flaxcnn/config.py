"""The default experiment config every ``configs/*.py`` starts from, the rules its fields obey
(``RULES``, checked by ``validate`` before any work), and config-file loading."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import pathlib
from typing import Any, Callable, Sequence

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """Every field the trainer reads, with defaults; experiments override what they change."""
    config = ml_collections.ConfigDict()
    config.model = 'mynet_v2'
    config.model_kwargs = ml_collections.ConfigDict()  # passed to the model factory
    config.ops = 'fast'  # 'fast' (custom_vjp conv/max-pool, same math) or 'plain' (XLA's ops)

    config.dataset = ml_collections.ConfigDict()  # read by flaxcnn.data.datasets
    config.dataset.name = 'glyphs'
    config.dataset.data_dir = '~/.cache/flaxcnn/datasets'  # prepared ArrayRecord files
    config.dataset.image_size = 90
    config.dataset.seed = 0

    config.input = ml_collections.ConfigDict()
    # The random augmentation runs on the device, in the train step (flaxcnn.recipes).
    config.input.rotation_degrees = 0.0  # uniform in [-d, d]
    config.input.random_scale = 0.0  # zoom by a uniform factor in [1 - s, 1 + s]
    config.input.flip = False  # random left-right mirroring
    config.input.center_crop = 0  # crop stored images to this size (train and eval); 0 = none
    config.input.random_crop_pad = 0  # translate by up to N pixels (pad N, crop back); on device
    config.input.mixup_alpha = 0.0  # mixup's Beta(alpha, alpha) weight; 0 = off; on device
    config.input.cutmix_alpha = 0.0  # cutmix's Beta(alpha, alpha) box share; 0 = off; on device
    # 'dataset' (train split mean/std), 'imagenet', or '' = 'imagenet' when the init.source
    # weights were trained so (and the images are RGB), else 'dataset'
    config.input.normalization = ''
    config.input.class_balance = 'none'  # none | weighted_loss (inverse frequency) | oversample
    # Datasets whose decoded images fit in this many MB are read into memory once, at start
    # (flaxcnn.data.in_memory); 0 = always read from disk.
    config.input.in_memory_mb = 4096
    config.input.num_workers = 1  # grain worker processes for data read from disk; 0 = none
    config.input.prefetch_batches = 2

    config.batch_size = 512
    config.eval_batch_size = 1024
    config.num_epochs = 20
    config.time_budget_s = 0.0  # training wall time in seconds; 0 = no budget
    config.seed = 0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = 'adam'  # adam | adamw | sgd
    config.optimizer.lr = 0.001
    config.optimizer.momentum = 0.9  # sgd only
    config.optimizer.nesterov = False  # sgd only
    config.optimizer.weight_decay = 0.0
    config.optimizer.clip_grad_norm = 0.0  # clip the gradients' global norm to this; 0 = off

    config.schedule = ml_collections.ConfigDict()
    # constant | piecewise | cosine | time_linear | one_cycle (over time_budget_s if set, else
    # over num_epochs)
    config.schedule.name = 'constant'
    config.schedule.warmup_epochs = 0.0
    config.schedule.decay_epochs = (30, 60)  # piecewise only
    config.schedule.decay_factor = 0.1  # piecewise only
    config.schedule.peak_fraction = 0.3  # one_cycle only: the share of the run before the peak

    config.loss = ml_collections.ConfigDict()
    config.loss.label_smoothing = 0.0  # share of each target spread over all classes

    # A moving average of params and BatchNorm statistics, validated beside the raw weights each
    # epoch (twice the validation time).
    config.ema = ml_collections.ConfigDict()
    config.ema.decay = 0.0  # 0 = off; validation picks the better of raw and averaged weights

    config.eval = ml_collections.ConfigDict()
    config.eval.tta = 0  # average the logits over shifts of N pixels up/down/left/right; 0 = off

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 50  # plus one at every epoch end; 0 = epoch ends only
    config.checkpoint.max_to_keep = 2  # latest N, kept beside the best one

    config.log_every_steps = 10

    config.init = ml_collections.ConfigDict()  # read by flaxcnn.transfer
    # An imported-weights folder or a run workdir to start from ('' = none). Not `init.from`:
    # ml_collections parses a field path as Python, where `from` is a keyword.
    config.init.source = ''

    config.finetune = ml_collections.ConfigDict()  # read by flaxcnn.finetune
    config.finetune.freeze = 'none'  # 'none' | 'backbone' | path prefixes: 'stem,blocks.0'
    config.finetune.backbone_lr_scale = 1.0  # the non-head parameters' lr, times the lr
    config.finetune.head_warmup_steps = 0  # first updates where only the head learns

    config.distributed = ml_collections.ConfigDict()  # several processes (hosts); see README
    config.distributed.coordinator_address = ''  # host:port of process 0; '' = from the env
    config.distributed.num_processes = 0  # 0 = JAX_NUM_PROCESSES, else one process
    config.distributed.process_id = -1  # -1 = JAX_PROCESS_ID
    config.distributed.auto_detect = False  # let JAX detect SLURM / Open MPI / k8s / TPU
    return config


class ConfigError(ValueError):
    """A config field outside what the trainer accepts; the message names field, value and rule."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one field accepts: ``accepts(value)`` and the words that say so."""

    accepts: Callable[[Any], bool]
    allowed: str | Callable[[], str]  # a callable names a registry's entries when it fails


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int() -> Rule:
    return Rule(lambda v: _int(v) and v > 0, 'an integer > 0')


def non_negative_int() -> Rule:
    return Rule(lambda v: _int(v) and v >= 0, 'an integer >= 0')


def positive() -> Rule:
    return Rule(lambda v: _number(v) and v > 0, 'a number > 0')


def non_negative() -> Rule:
    return Rule(lambda v: _number(v) and v >= 0, 'a number >= 0')


def fraction() -> Rule:
    return Rule(lambda v: _number(v) and 0 < v < 1, 'a number in (0, 1)')


def unit_interval() -> Rule:
    return Rule(lambda v: _number(v) and 0 <= v < 1, 'a number in [0, 1)')


def one_of(names: Callable[[], Sequence[str]]) -> Rule:
    """``names`` is called when checking, so the registries are imported only then."""
    return Rule(lambda v: v in names(), lambda: 'one of ' + ', '.join(map(repr, names())))


def _models() -> Sequence[str]:
    from flaxcnn import models

    return models.model_names()


def _datasets() -> Sequence[str]:
    from flaxcnn.data import datasets

    return datasets.dataset_names()


def _optimizers() -> Sequence[str]:
    from flaxcnn import optim

    return optim.OPTIMIZERS


def _schedules() -> Sequence[str]:
    from flaxcnn import optim

    return optim.SCHEDULES


def _class_balance_modes() -> Sequence[str]:
    from flaxcnn import class_balance

    return class_balance.MODES


def _glyph_classes(value) -> bool:
    from flaxcnn.data import glyphs

    try:
        glyphs.class_labels(value)
    except (AttributeError, TypeError, ValueError):
        return False
    return True


def _ops() -> Sequence[str]:
    from flaxcnn import ops

    return ops.IMPLEMENTATIONS


# Field path -> rule. Fields a config may lack (a dataset's own, a model's kwargs) are checked
# only when present; enum rules list their allowed values from the registries when they fail.
RULES: dict[str, Rule] = {
    'model': one_of(_models),
    'model_kwargs.dropout': unit_interval(),
    'ops': one_of(_ops),
    'dataset.name': one_of(_datasets),
    'dataset.image_size': positive_int(),
    'dataset.channels': one_of(lambda: (0, 1, 3)),  # 0: from the data (image folders)
    'dataset.resize': one_of(lambda: ('crop', 'stretch')),
    'dataset.validation_fraction': fraction(),
    'dataset.test_fraction': fraction(),
    'dataset.min_validation_per_class': non_negative_int(),
    'dataset.train_per_class': positive_int(),
    'dataset.validation_per_class': positive_int(),
    'dataset.test_per_class': positive_int(),
    'dataset.classes': Rule(
        _glyph_classes, "'' (all) or groups joined by '+': digits, capitals, lowercase"
    ),
    'input.rotation_degrees': non_negative(),
    'input.random_scale': unit_interval(),
    'input.in_memory_mb': non_negative(),
    'input.center_crop': non_negative_int(),
    'input.random_crop_pad': non_negative_int(),
    'input.mixup_alpha': non_negative(),
    'input.cutmix_alpha': non_negative(),
    'input.normalization': one_of(lambda: ('dataset', 'imagenet', '')),
    'input.class_balance': one_of(_class_balance_modes),
    'input.num_workers': non_negative_int(),
    'input.prefetch_batches': positive_int(),
    'batch_size': positive_int(),
    'eval_batch_size': positive_int(),
    'num_epochs': positive_int(),
    'time_budget_s': non_negative(),
    'optimizer.name': one_of(_optimizers),
    'optimizer.lr': positive(),
    'optimizer.momentum': unit_interval(),
    'optimizer.weight_decay': non_negative(),
    'optimizer.clip_grad_norm': non_negative(),
    'schedule.name': one_of(_schedules),
    'schedule.warmup_epochs': non_negative(),
    'schedule.decay_epochs': Rule(
        lambda v: isinstance(v, (tuple, list)) and all(_number(e) and e > 0 for e in v),
        'a sequence of epochs > 0',
    ),
    'schedule.decay_factor': positive(),
    'schedule.peak_fraction': fraction(),
    'loss.label_smoothing': unit_interval(),
    'ema.decay': unit_interval(),
    'eval.tta': non_negative_int(),
    'checkpoint.every_steps': non_negative_int(),
    'checkpoint.max_to_keep': positive_int(),
    'log_every_steps': positive_int(),
    'init.source': Rule(lambda v: isinstance(v, str), 'a folder path, or empty'),
    'finetune.freeze': Rule(
        lambda v: isinstance(v, str) and v.strip() != '',
        "'none', 'backbone' or comma-separated parameter path prefixes like 'stem,blocks.0'",
    ),
    'finetune.backbone_lr_scale': positive(),
    'finetune.head_warmup_steps': non_negative_int(),
}

_MISSING = object()


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
    node = config
    for key in path.split('.'):
        if key not in node:
            return _MISSING
        node = node[key]
    return node


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ``ConfigError`` for the first field that breaks its rule in ``RULES``, then
    checks that the model accepts its kwargs and the image size (``models.abstract_model``,
    shapes only)."""
    for path, rule in RULES.items():
        value = _get(config, path)
        if value is _MISSING or rule.accepts(value):
            continue
        allowed = rule.allowed() if callable(rule.allowed) else rule.allowed
        raise ConfigError(f'config.{path}={value!r} is not allowed: expected {allowed}.')
    _check_model(config)


def _check_model(config: ml_collections.ConfigDict) -> None:
    from flaxcnn import models

    size = config.input.center_crop or config.dataset.image_size
    if config.input.center_crop > config.dataset.image_size:
        raise ConfigError(
            f'config.input.center_crop={config.input.center_crop} is larger than '
            f'config.dataset.image_size={config.dataset.image_size}.'
        )
    try:
        models.abstract_model(
            config.model,
            num_classes=2,
            in_channels=config.dataset.get('channels', 3) or 3,  # 0: known once prepared
            image_size=size,
            **config.model_kwargs.to_dict(),
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f'config.model={config.model!r} with model_kwargs={config.model_kwargs.to_dict()} '
            f'at image size {size} (input.center_crop or dataset.image_size): {e}'
        ) from e


def from_file(path: str | pathlib.Path) -> ml_collections.ConfigDict:
    """``get_config()`` of a config file, as ``--config=path`` loads it."""
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(f'flaxcnn_config_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
