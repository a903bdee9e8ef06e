"""A study config: which experiment fields to vary and how, checked before any trial runs.

A study config file's ``get_config()`` starts from ``default_study()`` and fills it in, with
field paths nested as in the experiment config (``study.grid.optimizer.lr = (1e-3, 2e-3)``).
``Study.load`` resolves it against the base experiment config: every varied or overridden
path must exist there (``model_kwargs`` is open: its keys go to the model factory) and every
value must have the field's type, else a ``StudyError`` names the study field at fault.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Mapping
from typing import Any

import ml_collections
import optuna
from ml_collections.config_dict import placeholder

from flaxcnn.config import from_file

VARIANT = 'variant'  # the Optuna parameter that picks one of ``study.variants``
OPEN_FIELDS = ('model_kwargs',)  # experiment config dicts that may gain keys


class StudyError(ValueError):
    """A study config or study workdir that cannot be run; the message names the field or folder."""


def log_uniform(low: float, high: float) -> tuple:
    """A search range: floats between ``low`` and ``high``, sampled on a log scale."""
    return ('log_uniform', float(low), float(high))


def uniform(low: float, high: float) -> tuple:
    """A search range: floats between ``low`` and ``high``."""
    return ('uniform', float(low), float(high))


def integers(low: int, high: int) -> tuple:
    """A search range: integers from ``low`` to ``high`` inclusive."""
    return ('int', int(low), int(high))


def choice(*values) -> tuple:
    """A search range: one of ``values``."""
    return ('choice', *values)


def default_study() -> ml_collections.ConfigDict:
    """Every field of a study config, with defaults; study files override what they need."""
    study = ml_collections.ConfigDict()
    study.name = ''  # the Optuna study name; '' = the study file's name
    study.base_config = ''  # experiment config file, e.g. configs/glyph.py
    study.overrides = ml_collections.ConfigDict()  # experiment fields set in every trial
    study.num_epochs = placeholder(int)  # per-trial budget; None = the base config's
    study.time_budget_s = placeholder(float)
    study.seeds = 1  # runs per point, with config.seed, config.seed + 1, ...
    study.grid = ml_collections.ConfigDict()  # field -> tuple of values; every combination
    study.variants = ml_collections.ConfigDict()  # name (no dots) -> fields; crossed with grid
    study.search = ml_collections.ConfigDict()
    study.search.space = ml_collections.ConfigDict()  # field -> log_uniform(...), choice(...)...
    study.search.sampler = 'tpe'  # tpe | random
    study.search.num_trials = 0  # may grow between runs of the same study
    study.search.startup_trials = 5  # tpe: random trials before it models the results
    study.sampler_seed = 0  # fixes the order of grid points and the search's samples
    study.pruning = ml_collections.ConfigDict()
    study.pruning.enabled = False  # Optuna's MedianPruner on the first seed's validation accuracy
    study.pruning.by = 'auto'  # epoch | seconds; auto = seconds if there is a time budget
    study.pruning.startup_trials = 2  # complete trials before any trial is pruned
    study.pruning.warmup = 1  # epochs (or seconds) a trial runs before it may be pruned
    study.pruning.every_s = 0.0  # seconds between reports when by seconds; 0 = budget / 10
    return study


def flatten(tree, prefix: str = '') -> dict[str, Any]:
    """``{'optimizer': {'lr': x}}`` -> ``{'optimizer.lr': x}``: nested fields as dotted paths."""
    flat = {}
    for key, value in tree.items():
        path = f'{prefix}{key}'
        if isinstance(value, (Mapping, ml_collections.ConfigDict)) and value:
            flat.update(flatten(value, f'{path}.'))
        else:
            flat[path] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    return flat


def set_field(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
    """Sets ``config.<path> = value`` with ConfigDict's type checks; new keys only in OPEN_FIELDS."""
    *parents, leaf = path.split('.')
    node = config
    for depth, key in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            raise KeyError(f'{".".join(parents[: depth + 1])} is not a field')
        node = node[key]
    if not isinstance(node, ml_collections.ConfigDict):
        raise KeyError(f'{".".join(parents)} is not a group of fields')
    if leaf not in node and '.'.join(parents) not in OPEN_FIELDS:
        raise KeyError(f'{path} is not a field; fields here: {", ".join(sorted(node.keys()))}')
    if isinstance(node.get(leaf), ml_collections.ConfigDict):
        raise TypeError(f'{path} is a group of fields; set its fields one by one')
    with node.unlocked():
        node[leaf] = value


def experiment_config(base_config: str, values: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """The base experiment config file with ``values`` (dotted path -> value) applied.

    Trial config files call this, so a trial is re-run by hand with ``flaxcnn.train``.
    """
    config = from_file(base_config)
    config.lock()
    for path, value in values.items():
        set_field(config, path, value)
    return config


@dataclasses.dataclass(frozen=True)
class Categorical:
    """A parameter with named choices: Optuna stores the label, the trial gets the value."""

    labels: tuple  # str, int, float, bool or None: what Optuna's storage accepts
    values: tuple  # experiment values (a label's value), or variant names

    @classmethod
    def of(cls, values) -> Categorical:
        plain = all(v is None or isinstance(v, (str, int, float, bool)) for v in values)
        return cls(tuple(values) if plain else tuple(repr(v) for v in values), tuple(values))

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.CategoricalDistribution(self.labels)

    def value(self, label):
        return self.values[self.labels.index(label)]


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric search range."""

    kind: str  # log_uniform | uniform | int
    low: float
    high: float

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.kind == 'int':
            return optuna.distributions.IntDistribution(int(self.low), int(self.high))
        return optuna.distributions.FloatDistribution(
            self.low, self.high, log=self.kind == 'log_uniform'
        )

    def value(self, sampled):
        return sampled


@dataclasses.dataclass(frozen=True)
class Study:
    """A checked study: the parameters Optuna samples and how they become experiment fields."""

    name: str
    base_config: str  # absolute path of the experiment config file
    fixed: dict[str, Any]  # dotted path -> value in every trial (overrides and budget)
    params: dict[str, Categorical | Range]  # Optuna name (a dotted path or 'variant')
    variants: dict[str, dict[str, Any]]  # variant name -> dotted path -> value
    sampler: str  # grid | tpe | random
    num_trials: int  # grid: every point; search: study.search.num_trials
    seeds: tuple[int, ...]  # config.seed of each run of a point
    pruning: ml_collections.ConfigDict
    sampler_seed: int
    startup_trials: int  # tpe's random trials first
    identity: dict[str, Any]  # what a resumed study must match (hashed into ``digest``)

    @classmethod
    def load(
        cls, study: ml_collections.ConfigDict, name: str, base_dir: str | pathlib.Path = '.'
    ) -> Study:
        """Checks ``study`` (a study config) and resolves it against its base experiment config."""
        study = _with_defaults(study)
        base_path = _base_path(study.base_config, base_dir)
        try:
            base = from_file(base_path)
        except Exception as e:
            raise StudyError(f'study.base_config={study.base_config!r} could not load: {e}') from e
        base.lock()
        fixed = flatten(study.overrides)
        for field in ('num_epochs', 'time_budget_s'):
            if study[field] is not None:
                fixed[field] = study[field]
        if study.seeds < 1:
            raise StudyError(f'study.seeds={study.seeds}: a point needs at least one run.')
        _check_values(base, 'study.overrides', fixed)
        checked = experiment_config(base_path, fixed)
        params: dict[str, Categorical | Range] = {}
        for path, values in flatten(study.grid).items():
            params[path] = _grid_axis(checked, path, values)
        variants = {name: flatten(v) for name, v in study.variants.items()}
        for variant, fields in variants.items():
            if not fields and len(variants) == 1:
                raise StudyError(f'study.variants has only {variant!r}, which changes nothing.')
            _check_values(checked, f'study.variants[{variant!r}]', fields)
            clash = set(fields) & set(params)
            if clash:
                raise StudyError(
                    f'study.variants[{variant!r}] sets {sorted(clash)}, which study.grid '
                    'also varies: vary each field in one place.'
                )
        if variants:
            params[VARIANT] = Categorical(tuple(variants), tuple(variants))
        space = flatten(study.search.space)
        for path, spec in space.items():
            if path in params:
                raise StudyError(f'study.search.space.{path} is also in study.grid or variants.')
            params[path] = _search_param(checked, path, spec)
        if 'seed' in params or any('seed' in v for v in variants.values()):
            raise StudyError('Vary seeds with study.seeds, not as a field (seed).')
        if not params:
            raise StudyError(
                'Nothing to vary: study.grid, study.variants and study.search.space are empty.'
            )
        if space:
            if study.search.sampler not in ('tpe', 'random'):
                raise StudyError(
                    f"study.search.sampler={study.search.sampler!r}; expected 'tpe' or 'random'."
                )
            if study.search.num_trials < 1:
                raise StudyError('study.search.num_trials must be at least 1 for a search.')
            sampler, num_trials = study.search.sampler, study.search.num_trials
        else:
            sampler = 'grid'
            num_trials = 1
            for param in params.values():
                num_trials *= len(param.labels)
        pruning = study.pruning.copy_and_resolve_references()
        if pruning.by == 'auto':
            pruning.by = 'seconds' if checked.time_budget_s else 'epoch'
        if pruning.by not in ('epoch', 'seconds'):
            raise StudyError(f"study.pruning.by={pruning.by!r}; expected 'epoch' or 'seconds'.")
        if pruning.by == 'seconds' and not pruning.every_s:
            if not checked.time_budget_s:
                raise StudyError(
                    "study.pruning.by='seconds' needs study.pruning.every_s or a time budget."
                )
            pruning.every_s = checked.time_budget_s / 10
        resolved = study.to_dict()
        for field in ('name', 'base_config'):  # where it lives, not what it is
            resolved.pop(field)
        resolved['search'].pop('num_trials')  # a search may be extended
        identity = {
            'study': json.loads(json.dumps(resolved, default=repr)),
            'base': json.loads(from_file(base_path).to_json_best_effort()),
        }
        return cls(
            name=study.name or name,
            base_config=str(base_path),
            fixed=fixed,
            params=params,
            variants=variants,
            sampler=sampler,
            num_trials=num_trials,
            seeds=tuple(checked.seed + k for k in range(study.seeds)),
            pruning=pruning,
            sampler_seed=study.sampler_seed,
            startup_trials=study.search.startup_trials,
            identity=identity,
        )

    @property
    def digest(self) -> str:
        """A hash of what the study is; a workdir holding another digest is another study."""
        text = json.dumps(self.identity, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """The Optuna distribution of every parameter, for ``study.ask``."""
        return {name: param.distribution() for name, param in self.params.items()}

    def values(self, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """The experiment fields (dotted path -> value) of one run of the point ``params``."""
        values = dict(self.fixed)
        for name, sampled in params.items():
            value = self.params[name].value(sampled)
            if name == VARIANT:
                values.update(self.variants[value])
            else:
                values[name] = value
        values['seed'] = seed
        return values


def _with_defaults(study: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``study`` with the fields (and pruning/search sub-fields) it left out."""
    study = study.copy_and_resolve_references()
    defaults = default_study()
    for where, given, default in [('study', study, defaults)] + [
        (f'study.{group}', study.get(group), defaults[group]) for group in ('pruning', 'search')
    ]:
        if given is None:
            continue
        unknown = set(given.keys()) - set(default.keys())
        if unknown:
            raise StudyError(
                f'Unknown {where} field(s) {sorted(unknown)}; expected some of: '
                f'{", ".join(sorted(default.keys()))}.'
            )
        with given.unlocked():
            for key in default:
                if key not in given:
                    given[key] = default[key]
    return study


def _base_path(base_config: str, base_dir: str | pathlib.Path) -> pathlib.Path:
    if not base_config:
        raise StudyError('study.base_config is empty: name the experiment config file to vary.')
    path = pathlib.Path(base_config).expanduser()
    if not path.is_absolute():
        path = pathlib.Path(base_dir) / path
    if not path.is_file():
        raise StudyError(f'study.base_config={base_config!r}: no such file ({path}).')
    return path.resolve()


def _check_values(config: ml_collections.ConfigDict, where: str, values: Mapping) -> None:
    """Sets each value on a copy of ``config``; an unknown path or a wrong type is a StudyError."""
    for path, value in values.items():
        trial = config.copy_and_resolve_references()
        try:
            set_field(trial, path, value)
        except KeyError as e:
            raise StudyError(f'{where}.{path}: unknown experiment field ({e.args[0]}).') from None
        except TypeError as e:
            expected = type(_get(config, path)).__name__
            raise StudyError(
                f'{where}.{path}={value!r}: wrong type {type(value).__name__}, the field is '
                f'{expected} ({e}).'
            ) from None


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
    node = config
    for key in path.split('.'):
        node = node.get(key) if isinstance(node, ml_collections.ConfigDict) else None
    return node


def _grid_axis(config: ml_collections.ConfigDict, path: str, values) -> Categorical:
    where = f'study.grid.{path}'
    if not isinstance(values, (tuple, list)):
        raise StudyError(f'{where}={values!r}: expected a tuple of values to try.')
    if not values:
        raise StudyError(f'{where} is empty: give at least one value.')
    if len(set(map(repr, values))) != len(values):
        raise StudyError(f'{where}={values!r} repeats a value.')
    for value in values:
        _check_values(config, 'study.grid', {path: value})
    return Categorical.of(values)


def _search_param(config: ml_collections.ConfigDict, path: str, spec) -> Categorical | Range:
    where = f'study.search.space.{path}'
    kinds = ('log_uniform', 'uniform', 'int', 'choice')
    if not isinstance(spec, (tuple, list)) or not spec or spec[0] not in kinds:
        raise StudyError(
            f'{where}={spec!r}: expected log_uniform(lo, hi), uniform(lo, hi), integers(lo, hi) '
            'or choice(...) from flaxcnn.studies.spec.'
        )
    kind, *args = spec
    if kind == 'choice':
        if not args:
            raise StudyError(f'{where} is an empty choice.')
        for value in args:
            _check_values(config, 'study.search.space', {path: value})
        return Categorical.of(args)
    low, high = args
    if not low < high or (kind == 'log_uniform' and low <= 0):
        raise StudyError(f'{where}={spec!r}: expected 0 < low < high for log, low < high else.')
    for value in (low, high):
        _check_values(config, 'study.search.space', {path: value})
    return Range(kind, low, high)
