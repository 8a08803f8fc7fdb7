"""The model form: an analytic roofline-shaped base times a residual interpolated on a grid.

    log t(x) = log base(F, B) + r(x)

- ``base(F, B) = c0 + ((F/P)^s + (B/W)^s)^(1/s)``: a kernel floor ``c0`` plus a smooth max of
  compute time (FLOPs over an effective throughput ``P``) and memory time (bytes over an
  effective bandwidth ``W``); four numbers fitted in log space with a robust loss.
- ``r(x)``: what the base misses (tile quantisation, kernel choice, occupancy), stored on a
  regular grid over the log of the family's axes (:mod:`revati.replay.features`) and read
  back by multilinear interpolation. Measurements are splatted onto the grid knots (exact
  when they lie on knots, as measured grids do) and empty cells are filled from their
  neighbours.

Three forms share this code: ``base+grid`` (both), ``base`` (no grid: a smooth parametric
model) and ``grid`` (no base: plain interpolation of log time). The fit picks one per family
by held-out error.

A model refuses (returns NaN / None) for a query further outside its fitted range than the
axis' margin allows, so callers fall back to the roofline rather than extrapolate wildly.

Example::

    m = fit(X_log, flops, nbytes, duration_ns, form="base+grid", axis_names=("m", "n", "k"))
    m.predict(X_log, flops, nbytes)          # ns, NaN where refused
    f = m.compile(); f([4096.0, 4096.0, 4096.0], 2 * 4096**3, 3 * 4096**2 * 2)
"""

from __future__ import annotations

import math
import warnings
from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

FORMS = ("base+grid", "base", "grid")

MAX_KNOTS_PER_AXIS = 80
MAX_CELLS = 600_000
OUTLIER_FACTOR = 2.0


@dataclass
class GridModel:
    form: str
    axis_names: tuple[str, ...]
    knots: tuple[np.ndarray, ...]       # log values per axis, increasing; length 1 = collapsed
    residual: np.ndarray | None         # log residual on the knots' grid (None for form "base")
    base: tuple[float, float, float, float] | None  # (log c0_ns, log flop/ns, log byte/ns, s)
    range_lo: np.ndarray                # log of the smallest fitted value per axis
    range_hi: np.ndarray
    log_margin: np.ndarray              # log of each axis' allowed extrapolation factor

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"unknown form {self.form!r}; known: {FORMS}")
        d = len(self.axis_names)
        if len(self.knots) != d or len(self.range_lo) != d or len(self.range_hi) != d or len(self.log_margin) != d:
            raise ValueError("axis names, knots, ranges and margins must have the same length")
        if (self.form == "base") != (self.residual is None):
            raise ValueError(f"form {self.form!r} and residual grid disagree")
        if self.form != "grid" and self.base is None:
            raise ValueError(f"form {self.form!r} needs base parameters")
        if self.residual is not None and self.residual.shape != tuple(len(k) for k in self.knots):
            raise ValueError(f"residual shape {self.residual.shape} does not match knots")

    # ---- vectorised evaluation (fitting, evaluation, predict CLI) ----

    def in_range(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(X)
        return np.all((X >= self.range_lo - self.log_margin) & (X <= self.range_hi + self.log_margin)
                      & np.isfinite(X), axis=1)

    def base_ns(self, F: np.ndarray, B: np.ndarray) -> np.ndarray:
        if self.base is None:
            return np.ones(np.shape(F))
        return _base_ns(self.base, np.asarray(F, float), np.asarray(B, float))

    def residual_at(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, float))
        if self.residual is None:
            return np.zeros(len(X))
        return _interp(self.knots, self.residual, X)

    def predict(self, X: np.ndarray, F: np.ndarray, B: np.ndarray) -> np.ndarray:
        """Predicted ns per row; NaN where the model refuses (outside its range)."""
        X = np.atleast_2d(np.asarray(X, float))
        out = self.base_ns(F, B) * np.exp(self.residual_at(X))
        return np.where(self.in_range(X), out, np.nan)

    # ---- scalar evaluation (the predictor's hot path) ----

    def compile(self) -> Callable[[Sequence[float], float, float], "float | None"]:
        """A fast scalar evaluator: (raw axis values, flops, bytes) -> ns or None if refused."""
        lo = [float(a - m) for a, m in zip(self.range_lo, self.log_margin)]
        hi = [float(a + m) for a, m in zip(self.range_hi, self.log_margin)]
        live = [j for j, k in enumerate(self.knots) if len(k) > 1]
        knots = [self.knots[j].tolist() for j in live]
        shape = [len(k) for k in self.knots]
        strides_all = [1] * len(shape)
        for j in range(len(shape) - 2, -1, -1):
            strides_all[j] = strides_all[j + 1] * shape[j + 1]
        strides = [strides_all[j] for j in live]
        flat = self.residual.ravel().tolist() if self.residual is not None else None
        axis_lo = [k[0] for k in knots]
        axis_hi = [k[-1] for k in knots]
        base = self.base
        if base is not None:
            c0 = math.exp(base[0])
            inv_p = math.exp(-base[1])
            inv_w = math.exp(-base[2])
            s = base[3]
            inv_s = 1.0 / s
        log = math.log
        exp = math.exp
        n_axes = len(lo)

        def evaluate(values: Sequence[float], flops: float, nbytes: float) -> "float | None":
            xs = []
            for j in range(n_axes):
                v = values[j]
                if v <= 0.0:
                    return None
                x = log(v)
                if x < lo[j] or x > hi[j]:
                    return None
                xs.append(x)
            if base is not None:
                value = c0 + ((flops * inv_p) ** s + (nbytes * inv_w) ** s) ** inv_s
            else:
                value = 1.0
            if flat is None:
                return value
            corners = [(0, 1.0)]
            for a, j in enumerate(live):
                x = xs[j]
                kn = knots[a]
                if x <= axis_lo[a]:
                    i, f = 0, 0.0
                elif x >= axis_hi[a]:
                    i, f = len(kn) - 1, 0.0
                else:
                    i = bisect_right(kn, x) - 1
                    f = (x - kn[i]) / (kn[i + 1] - kn[i])
                st = strides[a]
                if f == 0.0:
                    corners = [(o + i * st, w) for o, w in corners]
                else:
                    g = 1.0 - f
                    nxt = []
                    for o, w in corners:
                        nxt.append((o + i * st, w * g))
                        nxt.append((o + (i + 1) * st, w * f))
                    corners = nxt
            r = 0.0
            for o, w in corners:
                r += flat[o] * w
            return value * exp(r)

        return evaluate


def _base_ns(params, F, B):
    c0, lp, lw, s = params
    return np.exp(c0) + ((F / np.exp(lp)) ** s + (B / np.exp(lw)) ** s) ** (1.0 / s)


def _cell_weights(knots: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the lower knot and the fraction towards the next one (clamped at the ends)."""
    if len(knots) == 1:
        return np.zeros(len(x), dtype=np.int64), np.zeros(len(x))
    xc = np.clip(x, knots[0], knots[-1])
    i = np.clip(np.searchsorted(knots, xc, side="right") - 1, 0, len(knots) - 2)
    f = (xc - knots[i]) / (knots[i + 1] - knots[i])
    return i, f


def _corners(knots, X):
    """Yield (flat index, weight) arrays for the 2^d corners around each row of X."""
    shape = [len(k) for k in knots]
    strides = np.ones(len(shape), dtype=np.int64)
    for j in range(len(shape) - 2, -1, -1):
        strides[j] = strides[j + 1] * shape[j + 1]
    offsets = [np.zeros(len(X), dtype=np.int64)]
    weights = [np.ones(len(X))]
    for j, kn in enumerate(knots):
        if len(kn) == 1:
            continue
        i, f = _cell_weights(kn, X[:, j])
        new_o, new_w = [], []
        for o, w in zip(offsets, weights):
            new_o += [o + i * strides[j], o + (i + 1) * strides[j]]
            new_w += [w * (1.0 - f), w * f]
        offsets, weights = new_o, new_w
    return offsets, weights


def _interp(knots, grid, X):
    flat = grid.ravel()
    out = np.zeros(len(X))
    for o, w in zip(*_corners(knots, X)):
        out += flat[o] * w
    return out


def choose_knots(x: np.ndarray, max_knots: int = MAX_KNOTS_PER_AXIS) -> np.ndarray:
    """Knots for one axis: every distinct value, or quantiles of them when there are too many."""
    u = np.unique(np.round(x, 9))
    if len(u) <= max_knots:
        return u
    idx = np.unique(np.round(np.linspace(0, len(u) - 1, max_knots)).astype(int))
    return u[idx]


def splat(knots: Sequence[np.ndarray], X: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Weighted average of the values r onto the grid (NaN where no measurement reaches)."""
    shape = tuple(len(k) for k in knots)
    total = np.zeros(int(np.prod(shape)))
    weight = np.zeros_like(total)
    for o, w in zip(*_corners(knots, X)):
        np.add.at(total, o, w * r)
        np.add.at(weight, o, w)
    out = np.full(total.shape, np.nan)
    # A knot touched only by the far tail of a neighbour's weight is as good as empty.
    ok = weight > 1e-3
    out[ok] = total[ok] / weight[ok]
    return out.reshape(shape)


def drop_outliers(grid: np.ndarray, factor: float = OUTLIER_FACTOR, min_neighbours: int = 3) -> tuple[np.ndarray, int]:
    """Blank cells that differ by more than ``factor`` from the median of their axis-neighbours.

    Measured tables hold the odd glitch (one shape 10x slower than every neighbour); a grid
    that interpolates through it spreads the glitch to every query around it. A genuine step
    (a kernel switch) differs from the neighbours on one side only, so the median of all
    neighbours keeps it.
    """
    g = grid.copy()
    neigh = []
    for ax in range(g.ndim):
        if g.shape[ax] < 2:
            continue
        for shift in (1, -1):
            v = np.full_like(g, np.nan)
            src = [slice(None)] * g.ndim
            dst = [slice(None)] * g.ndim
            if shift == 1:
                src[ax], dst[ax] = slice(None, -1), slice(1, None)
            else:
                src[ax], dst[ax] = slice(1, None), slice(None, -1)
            v[tuple(dst)] = g[tuple(src)]
            neigh.append(v)
    if not neigh:
        return g, 0
    stack = np.stack(neigh)
    count = np.sum(~np.isnan(stack), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN neighbourhoods: median is NaN
        med = np.nanmedian(stack, axis=0)
    bad = (~np.isnan(g)) & (count >= min_neighbours) & (np.abs(g - med) > math.log(factor))
    g[bad] = np.nan
    return g, int(bad.sum())


def fill_empty(grid: np.ndarray, max_rounds: int = 10_000, barrier_axes: Sequence[int] = ()) -> np.ndarray:
    """Fill NaN cells with the mean of their filled axis-neighbours, front by front.

    Neighbours across a ``barrier_axes`` axis (another code path) are used only for cells that
    nothing in their own regime can reach.
    """
    g = grid.copy()
    if not np.isnan(g).any():
        return g
    if np.isnan(g).all():
        return np.zeros_like(g)
    if barrier_axes:
        g = _fill_rounds(g, max_rounds, skip=set(barrier_axes))
    g = _fill_rounds(g, max_rounds, skip=set())
    g[np.isnan(g)] = 0.0
    return g


def _fill_rounds(g: np.ndarray, max_rounds: int, skip: set) -> np.ndarray:
    for _ in range(max_rounds):
        nan = np.isnan(g)
        if not nan.any():
            break
        acc = np.zeros_like(g)
        cnt = np.zeros_like(g)
        for ax in range(g.ndim):
            if g.shape[ax] < 2 or ax in skip:
                continue
            for lo_src, lo_dst in ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))):
                src = [slice(None)] * g.ndim
                dst = [slice(None)] * g.ndim
                src[ax], dst[ax] = lo_src, lo_dst
                v = g[tuple(src)]
                ok = ~np.isnan(v)
                a = acc[tuple(dst)]
                c = cnt[tuple(dst)]
                a[ok] += v[ok]
                c[ok] += 1
        upd = nan & (cnt > 0)
        if not upd.any():
            break
        g[upd] = acc[upd] / cnt[upd]
    return g


def fit_base(F: np.ndarray, B: np.ndarray, t: np.ndarray, init_flops_per_ns: float,
             init_bytes_per_ns: float) -> tuple[float, float, float, float]:
    """Least squares in log space with a soft-L1 loss (a few odd kernels must not steer it)."""
    from scipy.optimize import least_squares

    F = np.asarray(F, float)
    B = np.asarray(B, float)
    logt = np.log(t)

    def resid(p):
        return np.log(_base_ns(p, F, B)) - logt

    x0 = np.array([math.log(max(float(np.min(t)) * 0.8, 1.0)), math.log(init_flops_per_ns),
                   math.log(init_bytes_per_ns), 2.0])
    lower = [0.0, x0[1] - 12.0, x0[2] - 12.0, 1.0]
    upper = [math.log(1e9), x0[1] + 6.0, x0[2] + 6.0, 8.0]
    x0 = np.clip(x0, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
    sol = least_squares(resid, x0, bounds=(lower, upper), loss="soft_l1", f_scale=0.05, max_nfev=2000)
    return tuple(float(v) for v in sol.x)  # type: ignore[return-value]


def fit(X: np.ndarray, F: np.ndarray, B: np.ndarray, t: np.ndarray, *, form: str,
        axis_names: Sequence[str], margins: Sequence[float] | None = None,
        init_flops_per_ns: float = 5e5, init_bytes_per_ns: float = 2e3,
        base: tuple[float, float, float, float] | None = None,
        regimes: Sequence[bool] | None = None) -> GridModel:
    """Fit one model on rows X (log axis values), F (FLOPs), B (bytes), t (duration ns).

    ``base`` reuses base parameters already fitted on the same rows (the fit compares forms
    and axis sets on identical folds, and the base does not depend on either). ``regimes``
    marks the axes that switch between code paths: empty cells are filled within their regime
    first (see :func:`fill_empty`).
    """
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; known: {FORMS}")
    X = np.atleast_2d(np.asarray(X, float))
    t = np.asarray(t, float)
    if len(X) != len(t) or len(t) == 0:
        raise ValueError("need at least one row, with as many durations as feature rows")
    if X.shape[1] != len(axis_names):
        raise ValueError(f"{X.shape[1]} feature columns but {len(axis_names)} axis names")
    if not (np.all(np.isfinite(X)) and np.all(t > 0)):
        raise ValueError("features must be finite and durations positive")
    margins = list(margins) if margins is not None else [2.0] * X.shape[1]
    if form == "grid":
        base = None
    elif base is None:
        base = fit_base(F, B, t, init_flops_per_ns, init_bytes_per_ns)
    r = np.log(t) - (np.log(_base_ns(base, np.asarray(F, float), np.asarray(B, float))) if base else 0.0)
    residual = None
    knots: list[np.ndarray] = [choose_knots(X[:, j]) for j in range(X.shape[1])]
    while int(np.prod([len(k) for k in knots])) > MAX_CELLS:
        j = int(np.argmax([len(k) for k in knots]))
        knots[j] = choose_knots(knots[j], max(2, len(knots[j]) * 2 // 3))
    if form != "base":
        barrier = [j for j, flag in enumerate(regimes or []) if flag]
        residual = fill_empty(drop_outliers(splat(knots, X, r))[0], barrier_axes=barrier)
    else:
        knots = [np.array([float(np.median(X[:, j]))]) for j in range(X.shape[1])]
    return GridModel(
        form=form, axis_names=tuple(axis_names), knots=tuple(knots), residual=residual, base=base,
        range_lo=X.min(axis=0), range_hi=X.max(axis=0), log_margin=np.log(np.asarray(margins, float)),
    )
