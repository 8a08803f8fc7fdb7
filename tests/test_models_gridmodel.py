"""The model form: recovers a known law, interpolates a known residual, refuses far outside."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from revati.replay.model_fit import gridmodel

LAW = (math.log(4000.0), math.log(600e3), math.log(2500.0), 3.0)


def _gemm_rows(ms, ns, ks):
    m, n, k = (np.array(v, float) for v in zip(*itertools.product(ms, ns, ks)))
    F = 2 * m * n * k
    B = 2 * (m * k + k * n + m * n)
    return np.log(np.c_[m, n, k]), F, B


def _law(F, B, law=LAW):
    c0, lp, lw, s = law
    return math.exp(c0) + ((F / math.exp(lp)) ** s + (B / math.exp(lw)) ** s) ** (1 / s)


GRID = ([1, 8, 64, 512, 4096], [256, 1024, 4096, 16384], [256, 1024, 4096, 16384])


def test_base_recovers_known_law():
    X, F, B = _gemm_rows(*GRID)
    t = _law(F, B)
    params = gridmodel.fit_base(F, B, t, 400e3, 2000.0)
    assert math.exp(params[0]) == pytest.approx(4000.0, rel=0.02)
    assert math.exp(params[1]) == pytest.approx(600e3, rel=0.02)
    assert math.exp(params[2]) == pytest.approx(2500.0, rel=0.02)


def test_base_plus_grid_predicts_unseen_shapes_with_a_smooth_residual():
    X, F, B = _gemm_rows(*GRID)
    # A residual smooth in log m (efficiency rising with m): the base alone cannot express it.
    resid = 0.3 * np.sin(X[:, 0] / 3.0)
    t = _law(F, B) * np.exp(resid)
    model = gridmodel.fit(X, F, B, t, form="base+grid", axis_names=("m", "n", "k"))
    Xq, Fq, Bq = _gemm_rows([3, 30, 300, 3000], [512, 2048, 8192], [512, 2048, 8192])
    truth = _law(Fq, Bq) * np.exp(0.3 * np.sin(Xq[:, 0] / 3.0))
    ape = np.abs(model.predict(Xq, Fq, Bq) / truth - 1)
    assert ape.max() < 0.05
    base_only = gridmodel.fit(X, F, B, t, form="base", axis_names=("m", "n", "k"))
    assert np.abs(base_only.predict(Xq, Fq, Bq) / truth - 1).mean() > ape.mean()


def test_grid_is_exact_on_its_knots_and_linear_between():
    X, F, B = _gemm_rows([1, 4], [16, 64], [16, 64])
    t = np.exp(X[:, 0] + 0.5 * X[:, 1])  # log t linear in the log axes
    model = gridmodel.fit(X, F, B, t, form="grid", axis_names=("m", "n", "k"))
    assert np.allclose(model.predict(X, F, B), t)
    Xq = np.log(np.array([[2.0, 32.0, 32.0]]))
    assert model.predict(Xq, F[:1], B[:1])[0] == pytest.approx(math.exp(Xq[0, 0] + 0.5 * Xq[0, 1]))


def test_refuses_far_outside_the_fitted_range_only():
    X, F, B = _gemm_rows(*GRID)
    model = gridmodel.fit(X, F, B, _law(F, B), form="base+grid", axis_names=("m", "n", "k"), margins=[2, 2, 2])
    inside_margin = np.log(np.array([[8192.0, 1024, 1024]]))   # 2x beyond m's max: allowed
    far = np.log(np.array([[10 * 4096.0, 1024, 1024]]))       # 10x beyond: refused
    assert np.isfinite(model.predict(inside_margin, [1e12], [1e8]))[0]
    assert np.isnan(model.predict(far, [1e12], [1e8]))[0]
    f = model.compile()
    assert f([10 * 4096.0, 1024, 1024], 1e12, 1e8) is None
    assert f([0.0, 1024, 1024], 1.0, 1.0) is None


def test_compiled_scalar_matches_vectorised():
    rng = np.random.default_rng(1)
    X, F, B = _gemm_rows(*GRID)
    t = _law(F, B) * np.exp(rng.normal(0, 0.1, len(F)))
    for form in gridmodel.FORMS:
        model = gridmodel.fit(X, F, B, t, form=form, axis_names=("m", "n", "k"))
        f = model.compile()
        q = np.exp(rng.uniform(np.log([1, 256, 256]), np.log([4096, 16384, 16384]), size=(50, 3)))
        Fq, Bq = 2 * q.prod(axis=1), 2 * (q[:, 0] * q[:, 2] + q[:, 2] * q[:, 1] + q[:, 0] * q[:, 1])
        vec = model.predict(np.log(q), Fq, Bq)
        scal = [f(list(row), a, b) for row, a, b in zip(q, Fq, Bq)]
        assert np.allclose(vec, scal, rtol=1e-12)


def test_glitch_is_dropped_but_a_step_is_kept():
    g = np.zeros((7, 7))
    g[3, 3] = math.log(10.0)      # one cell 10x off every neighbour: a measurement glitch
    g[:, 5:] = math.log(4.0)      # a genuine step along one axis
    cleaned, dropped = gridmodel.drop_outliers(g)
    assert dropped == 1 and np.isnan(cleaned[3, 3])
    assert np.all(cleaned[:, 5:] == math.log(4.0))


def test_fill_empty_reaches_every_cell():
    g = np.full((5, 6), np.nan)
    g[0, 0], g[4, 5] = 1.0, 3.0
    filled = gridmodel.fill_empty(g)
    assert not np.isnan(filled).any()
    assert filled.min() >= 1.0 and filled.max() <= 3.0


@pytest.mark.parametrize("kwargs, message", [
    ({"form": "spline"}, "unknown form"),
    ({"form": "grid", "axis_names": ("m", "n")}, "axis names"),
])
def test_fit_validation(kwargs, message):
    X, F, B = _gemm_rows(*GRID)
    args = {"form": "grid", "axis_names": ("m", "n", "k")} | kwargs
    with pytest.raises(ValueError, match=message):
        gridmodel.fit(X, F, B, _law(F, B), **args)
