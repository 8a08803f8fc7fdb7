"""Arrival processes: seeded statistical checks (mean rate, CV), determinism, vLLM's semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from revati.workload.arrivals import AllAtOnce, FixedConcurrency, GammaArrivals, PoissonArrivals, from_rate

N = 20_000


def _gaps(proc, seed=0, n=N):
    offsets = proc.offsets_s(n, np.random.default_rng(seed))
    return offsets, np.diff(np.concatenate([[0.0], offsets]))


@pytest.mark.parametrize("rate", [0.5, 4.0, 100.0])
def test_poisson_mean_rate_and_cv_without_rescaling(rate):
    _, gaps = _gaps(PoissonArrivals(rate, rescale_total=False))
    # mean gap 1/rate within 3 standard errors (exponential: sd = mean)
    assert abs(gaps.mean() - 1 / rate) < 3 * (1 / rate) / math.sqrt(N)
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.03
    assert (gaps > 0).all()


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 2.0, 8.0])
def test_gamma_cv_is_one_over_sqrt_burstiness(burstiness):
    proc = GammaArrivals(rate=10.0, burstiness=burstiness, rescale_total=False)
    _, gaps = _gaps(proc)
    assert proc.cv == pytest.approx(1 / math.sqrt(burstiness))
    assert gaps.std() / gaps.mean() == pytest.approx(proc.cv, rel=0.05)
    assert gaps.mean() == pytest.approx(0.1, rel=0.03)


def test_rescaled_arrivals_end_exactly_at_n_over_rate_and_keep_cv():
    offsets, gaps = _gaps(GammaArrivals(rate=8.0, burstiness=0.5))
    assert offsets[-1] == pytest.approx(N / 8.0, rel=1e-12)
    assert np.all(np.diff(offsets) >= 0)
    # rescaling multiplies every gap by one factor: the CV is unchanged
    assert gaps.std() / gaps.mean() == pytest.approx(1 / math.sqrt(0.5), rel=0.05)


def test_same_seed_same_arrivals_other_seed_other_arrivals():
    proc = GammaArrivals(rate=3.0, burstiness=0.7)
    a, _ = _gaps(proc, seed=7, n=100)
    b, _ = _gaps(proc, seed=7, n=100)
    c, _ = _gaps(proc, seed=8, n=100)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_infinite_rate_and_burstiness():
    assert np.array_equal(from_rate(math.inf).offsets_s(5, np.random.default_rng(0)), np.zeros(5))
    offsets, gaps = _gaps(GammaArrivals(rate=4.0, burstiness=math.inf), n=10)
    assert np.allclose(gaps, 0.25)
    assert GammaArrivals(rate=4.0, burstiness=math.inf).cv == 0.0
    assert isinstance(from_rate(2.0, 0.5), GammaArrivals)


def test_closed_loop_processes_send_everything_at_zero():
    rng = np.random.default_rng(0)
    assert np.array_equal(AllAtOnce().offsets_s(3, rng), np.zeros(3))
    assert np.array_equal(FixedConcurrency(4).offsets_s(3, rng), np.zeros(3))


@pytest.mark.parametrize("kwargs", [dict(rate=0), dict(rate=-1), dict(rate=1, burstiness=0), dict(rate=1, burstiness=-2)])
def test_bad_parameters_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        GammaArrivals(**kwargs)
    with pytest.raises(ValueError):
        FixedConcurrency(0)
