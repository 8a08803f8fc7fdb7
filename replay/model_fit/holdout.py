"""Honest hold-out splits: whole regions of the shape grid or whole models, never random rows.

A measured grid is dense: a random row's neighbours are fitted and an interpolating model
looks perfect. So every test set here removes *all* rows that share the held-out value:

- ``lines:<param>``: every third interior distinct value of one parameter (e.g. n = 1536,
  5120, ...) with every row at those values; the model must bridge a gap twice the grid's
  spacing, wider than any shape between two measured values in use.
- ``groups:<i>/<n>``: whole configurations of several parameters (attention head layouts,
  i.e. new models), only those inside the measured range on every axis that has an inside.
- ``model:<name>``: every row of one model's shapes (Vidur's per-model tables).

Example::

    folds = holdout.plan({"m": m, "n": n, "k": k}, line_params=("m", "n", "k"))
    for fold in folds: train, test = ~fold.test, fold.test
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

LINE_EVERY = 3
GROUP_FOLDS = 4
MIN_MODELS = 3


@dataclass(frozen=True)
class Fold:
    name: str
    test: np.ndarray  # bool mask over the rows

    def __post_init__(self):
        if self.test.dtype != bool:
            raise ValueError("fold mask must be boolean")


def line_folds(values: Mapping[str, np.ndarray], params: Sequence[str], every: int = LINE_EVERY) -> list[Fold]:
    if every < 2:
        raise ValueError("every must be >= 2 (otherwise nothing is left to fit)")
    folds = []
    for p in params:
        v = np.asarray(values[p])
        u = np.unique(v)
        interior = u[1:-1]
        held = interior[::every]
        if len(held) == 0:
            continue
        folds.append(Fold(f"lines:{p}", np.isin(v, held)))
    return folds


def group_keys(columns: Sequence[np.ndarray]) -> np.ndarray:
    """One integer id per distinct tuple of the given columns (row-aligned)."""
    stacked = np.column_stack([np.asarray(c, float) for c in columns])
    _, ids = np.unique(stacked, axis=0, return_inverse=True)
    return ids.ravel()


def group_folds(columns: Sequence[np.ndarray], n_folds: int = GROUP_FOLDS) -> list[Fold]:
    stacked = np.column_stack([np.asarray(c, float) for c in columns])
    groups, ids = np.unique(stacked, axis=0, return_inverse=True)
    ids = ids.ravel()
    if len(groups) < 3:
        return []
    inside = np.ones(len(groups), dtype=bool)
    for j in range(groups.shape[1]):
        col = groups[:, j]
        if len(np.unique(col)) >= 3:
            inside &= (col > col.min()) & (col < col.max())
    candidates = np.flatnonzero(inside)
    if len(candidates) == 0:
        return []
    n = min(n_folds, len(candidates))
    folds = []
    for i in range(n):
        held = candidates[i::n]
        folds.append(Fold(f"groups:{i + 1}/{n}", np.isin(ids, held)))
    return folds


def model_folds(models: np.ndarray, min_models: int = MIN_MODELS) -> list[Fold]:
    models = np.asarray(models, dtype=object)
    named = np.array([m is not None and m == m and str(m) != "" for m in models], dtype=bool)
    names = sorted({str(m) for m in models[named]})
    if len(names) < min_models:
        return []
    as_str = np.array([str(m) if ok else "" for m, ok in zip(models, named)], dtype=object)
    return [Fold(f"model:{name}", as_str == name) for name in names]


def plan(values: Mapping[str, np.ndarray], line_params: Sequence[str] = (),
         group_params: Sequence[str] = (), models: np.ndarray | None = None) -> list[Fold]:
    """All folds for one family's rows; folds that would leave nothing to fit are dropped."""
    folds = line_folds(values, line_params)
    if group_params:
        folds += group_folds([values[p] for p in group_params])
    if models is not None:
        folds += model_folds(models)
    return [f for f in folds if f.test.any() and not f.test.all()]
