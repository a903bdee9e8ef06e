"""Imbalanced classes: inverse-frequency loss weights, and an endless draw of training examples
that visits the classes evenly (``input.class_balance``)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import grain
import numpy as np

MODES = ('none', 'weighted_loss', 'oversample')


def class_weights(counts: Sequence[int], mode: str) -> np.ndarray | None:
    """Per-class cross-entropy weights for ``mode``: ``n / (k * count)`` (a balanced set gets
    all ones, and the weighted example count equals ``n``) for ``weighted_loss``; else None."""
    if mode not in MODES:
        raise ValueError(f'input.class_balance={mode!r}; expected one of {MODES}.')
    if mode != 'weighted_loss':
        return None
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def loss_weights(mode: str, dataset) -> np.ndarray | None:
    """``class_weights`` of ``dataset``'s train split; counted only when ``mode`` needs them."""
    if mode != 'weighted_loss':
        return None
    from flaxcnn.data import datasets

    return class_weights(datasets.count_classes(dataset, 'train'), mode)


@dataclasses.dataclass(frozen=True, eq=False)
class BalancedDraw(grain.transforms.Map):
    """Draw ``t`` of an endless run -> an index into the train split, classes visited evenly.

    Each epoch of ``epoch_size`` draws gives every class the same number of slots (within one),
    in a seeded order; a class's slots walk through its examples in a seeded order reshuffled
    each time they are used up. Everything is a function of ``(seed, t)``, so a resumed run
    draws exactly what an uninterrupted one would.
    """

    labels: np.ndarray  # of the train split, in order
    epoch_size: int
    seed: int

    @functools.cached_property
    def _members(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.labels == c) for c in np.unique(self.labels)]

    @functools.cached_property
    def _cache(self) -> dict:
        return {}

    def _remember(self, key, make):
        if key not in self._cache:
            if len(self._cache) > 4 * len(self._members) + 4:
                self._cache.clear()
            self._cache[key] = make()
        return self._cache[key]

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(class of each slot, how many earlier slots of the epoch have that class)."""
        k = len(self._members)
        classes = np.random.default_rng([self.seed, epoch]).permutation(
            np.arange(self.epoch_size) % k
        )
        rank = np.zeros(self.epoch_size, np.int64)
        for c in range(k):
            where = classes == c
            rank[where] = np.arange(where.sum())
        return classes, rank

    def map(self, t: int) -> int:
        epoch, position = divmod(int(t), self.epoch_size)
        classes, rank = self._remember(('epoch', epoch), lambda: self._epoch(epoch))
        c = int(classes[position])
        members = self._members[c]
        slots = -(-(self.epoch_size - c) // len(self._members))  # slots of class c per epoch
        cycle, i = divmod(epoch * slots + int(rank[position]), len(members))
        order = self._remember(
            (c, cycle),
            lambda: np.random.default_rng([self.seed, 1 + c, cycle]).permutation(len(members)),
        )
        return int(members[order[i]])
