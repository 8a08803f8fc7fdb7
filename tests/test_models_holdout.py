"""Hold-out splits remove whole regions or whole models: nothing held out is fitted."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from revati.replay.model_fit import holdout


def _grid():
    m, n, k = (np.array(v, float) for v in zip(*itertools.product(
        [1, 2, 4, 8, 16, 32, 64, 128], [256, 512, 1024, 2048, 4096], [128, 256, 512, 1024])))
    return {"m": m, "n": n, "k": k}


def test_line_folds_hold_out_whole_values_and_never_the_edges():
    values = _grid()
    folds = holdout.line_folds(values, ["m", "n", "k"])
    assert [f.name for f in folds] == ["lines:m", "lines:n", "lines:k"]
    for fold, p in zip(folds, "mnk"):
        held = set(values[p][fold.test])
        kept = set(values[p][~fold.test])
        assert held and kept and not held & kept          # no held-out value is fitted
        u = np.unique(values[p])
        assert u[0] not in held and u[-1] not in held      # the range stays covered
    # interior m values are 2..64; every third of them is held out
    assert set(values["m"][folds[0].test]) == {2.0, 16.0}


def test_group_folds_hold_out_whole_inside_configurations():
    h = np.array([1, 2, 4, 8, 16, 32, 64] * 3, float)
    hkv = np.repeat([1.0, 2.0, 8.0], 7)
    d = np.full(21, 128.0)
    rows_h = np.repeat(h, 5)
    rows_hkv = np.repeat(hkv, 5)
    rows_d = np.repeat(d, 5)
    folds = holdout.group_folds([rows_h, rows_hkv, rows_d], n_folds=2)
    assert len(folds) == 2
    seen = set()
    for f in folds:
        test_groups = set(zip(rows_h[f.test], rows_hkv[f.test]))
        train_groups = set(zip(rows_h[~f.test], rows_hkv[~f.test]))
        assert not test_groups & train_groups
        for hh, kk in test_groups:                           # only inside the measured range
            assert 1 < hh < 64 and kk == 2.0
        seen |= test_groups
    assert len(seen) == 5                                    # h = 2..32 at hkv = 2


def test_model_folds_leave_one_model_out_and_keep_unnamed_rows_in_training():
    models = np.array(["a", "a", "b", "c", None, "b"], dtype=object)
    folds = holdout.model_folds(models)
    assert [f.name for f in folds] == ["model:a", "model:b", "model:c"]
    for f in folds:
        assert not f.test[4]
        assert len(set(models[f.test])) == 1
    assert holdout.model_folds(np.array(["a", "b", None], dtype=object)) == []


def test_plan_drops_empty_folds():
    values = {"m": np.array([1.0, 2.0, 1.0, 2.0]), "n": np.array([1.0, 1.0, 1.0, 1.0])}
    assert holdout.plan(values, ["m", "n"]) == []


def test_line_folds_reject_every_below_two():
    with pytest.raises(ValueError):
        holdout.line_folds(_grid(), ["m"], every=1)
