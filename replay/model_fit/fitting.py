"""`revati models fit`: per (GPU, op family, dtype) duration models from the kernel database.

Steps, per family with data for the GPU:

1. **Rows** (DuckDB): ``op_samples`` for the GPU and family, duplicates of a shape collapsed to
   their median, with the base's work term (FLOPs; algorithm steps for collectives), bytes
   moved and the log of every candidate grid axis computed in SQL
   (:mod:`revati.replay.features`).
2. **Slice**: rows come from several sources, software stacks and kernels that disagree a
   little on the same shape; a model is fitted on one slice (source, software, kernel, topology)
   per dtype class (bf16 and fp16 run on the same tensor cores and share one model). The
   preferred slice comes from traces of the user's own runs if any; else it runs the kernels a
   current vLLM runs (:data:`KERNEL_PREFERENCE`), on one switch-connected node, from
   AIConfigurator before Vidur, newest software version first. Labels of one kernel are
   grouped (:data:`KERNEL_GROUPS`).
3. **Form by held-out error**: every candidate (axis set x form, :mod:`revati.replay.model_fit.gridmodel`)
   is fitted on the training part of each honest fold (:mod:`revati.replay.model_fit.holdout`) and scored
   on the held-out part; the lowest pooled MAPE wins (a refused row counts as 100% error) and
   is refitted on all rows.
4. **Cross-source check**: the chosen form fitted on one source predicts the shapes another
   source measured (where the first covers them): the disagreement between software stacks,
   i.e. the noise floor under any model's error.

Example::

    from revati.replay.model_fit import fitting, model_store
    result = fitting.fit_gpu(fitting.FitConfig(gpu="h100"))
    model_store.save(result, "models/")
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import duckdb
import numpy as np

from revati import gpus, vocab
from revati.errors import BadInput
from revati.replay import features
from revati.replay.model_fit import gridmodel, holdout
from revati.replay.kernel_db import samples

# Kernel sources in order of preference, per family (regular expressions, case-insensitive):
# what a current vLLM runs by default on the GPUs in the database.
KERNEL_PREFERENCE: dict[str, tuple[str, ...]] = {
    # block-scaled fp8 GEMMs are another kernel than per-tensor fp8: never preferred here
    "gemm": (r"nn\.functional\.linear", r"cutlassfp8scaledmm", r"^vllm_default$", r"^linear \(per layer\)$"),
    "attn_prefill": (r"fa3", r"flash_attn(?!_fa4)", r"fa4", r"flash"),
    "attn_decode": (r"fa3", r"flash_attn(?!_fa4)", r"fa4", r"flash"),
    # vLLM's own all-reduce inside CUDA graphs (custom all-reduce, NCCL for large messages);
    # the eager numbers include host launch cost the emulator accounts for separately.
    "all_reduce": (r"graph", r"nccl", r"eager"),
    "activation": (r"silu_and_mul",),          # the vocabulary's activation is the gated one
}
# Kernel sources that name the same kernel under different labels (Vidur labels every layer's
# GEMM by the layer it belongs to) are one slice: label pattern -> the group's name.
KERNEL_GROUPS: dict[str, tuple[tuple[str, str], ...]] = {
    "gemm": ((r"^(attn_pre_proj|attn_post_proj|mlp_up_proj|mlp_down_proj)$", "linear (per layer)"),),
    "norm": ((r"^(input_layernorm|post_attention_layernorm)$", "layernorm (per layer)"),),
}
SOURCE_PREFERENCE = ("trace", "aiconfigurator", "vidur")
DTYPE_CLASS = {"bf16": "16-bit", "fp16": "16-bit"}
# A shape of one source counts as covered by another when some measured shape of the other
# lies within this factor on every axis.
COVER_FACTOR = 1.5
# Candidate selection charges each refused held-out row as this much error (percent), so a
# candidate cannot win by refusing the hard rows.
REFUSED_PENALTY_PCT = 100.0
WORST_SHAPES = 8


@dataclass(frozen=True)
class FitConfig:
    gpu: str
    families: tuple[str, ...] = ()          # empty: every family with data
    trace_dirs: tuple[Path, ...] = ()       # extra folders holding op_samples Parquet
    include_embedded: bool = True           # the embedded traces/ ($REVATI_HOME/traces: always)
    min_rows: int = 20
    cross_source: bool = True

    def __post_init__(self):
        object.__setattr__(self, "gpu", gpus.resolve_key(self.gpu))
        for fam in self.families:
            features.family_features(fam)
        if self.min_rows < 4:
            raise ValueError(f"min_rows must be at least 4, got {self.min_rows}")
        object.__setattr__(self, "trace_dirs", tuple(Path(d) for d in self.trace_dirs))
        for d in self.trace_dirs:
            if not d.is_dir():
                raise BadInput(d, "no such folder")


@dataclass(frozen=True)
class SliceKey:
    source: str
    software: str
    kernel_source: str
    topology: str
    dtype: str

    def describe(self) -> str:
        parts = [self.source, self.software, f"[{self.kernel_source}]" if self.kernel_source else "", self.dtype]
        if self.topology:
            parts.append(f"topology={self.topology}")
        return " ".join(p for p in parts if p)


@dataclass
class FamilyRows:
    """Rows of one family (one or more merged slices), as numpy columns."""

    family: str
    key: SliceKey
    params: dict[str, np.ndarray]
    model: np.ndarray
    work: np.ndarray         # the base's compute-like term (features.base_work): FLOPs, or steps
    nbytes: np.ndarray
    duration_ns: np.ndarray
    axes_log: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.duration_ns)

    def X(self, axes: Sequence[features.Axis]) -> np.ndarray:
        return np.column_stack([self.axes_log[a.name] for a in axes])

    def shape_of(self, i: int) -> dict[str, float]:
        return {p: _plain(v[i]) for p, v in self.params.items()}


@dataclass
class Stats:
    rows: int
    refused_rows: int
    mape_pct: float
    median_ape_pct: float
    p90_ape_pct: float

    @property
    def selection_score(self) -> float:
        answered = self.rows - self.refused_rows
        if self.rows == 0:
            return math.inf
        mape = self.mape_pct if answered else 0.0
        return (mape * answered + REFUSED_PENALTY_PCT * self.refused_rows) / self.rows


def ape_stats(measured: np.ndarray, predicted: np.ndarray) -> tuple[Stats, np.ndarray]:
    measured = np.asarray(measured, float)
    predicted = np.asarray(predicted, float)
    ok = np.isfinite(predicted)
    ape = np.abs(predicted[ok] / measured[ok] - 1.0) * 100.0
    if len(ape) == 0:
        return Stats(len(measured), int((~ok).sum()), math.nan, math.nan, math.nan), ape
    return Stats(len(measured), int((~ok).sum()), float(ape.mean()), float(np.median(ape)),
                 float(np.percentile(ape, 90))), ape


@dataclass
class FittedFamily:
    gpu: str
    family: str
    dtype: str
    serves_dtypes: tuple[str, ...]
    axis_set: str
    axes: tuple[features.Axis, ...]
    model: gridmodel.GridModel
    key: SliceKey
    rows: int
    train: Stats
    heldout: Stats | None
    folds: tuple[str, ...]


@dataclass
class FitResult:
    gpu: str
    run_id: str
    families: list[str] = field(default_factory=list)     # families the fit attempted
    models: list[FittedFamily] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---- rows ----

def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


def _version(software: str) -> tuple[int, ...]:
    m = re.search(r"(\d+(?:\.\d+)*)", software or "")
    return tuple(int(x) for x in m.group(1).split(".")) if m else ()


def _kernel_rank(family: str, kernel_source: str) -> int:
    prefs = KERNEL_PREFERENCE.get(family, ())
    for i, pat in enumerate(prefs):
        if re.search(pat, kernel_source or "", flags=re.IGNORECASE):
            return i
    return len(prefs)


def kernel_group(family: str, kernel_source: str) -> str:
    for pat, name in KERNEL_GROUPS.get(family, ()):
        if re.search(pat, kernel_source or "", flags=re.IGNORECASE):
            return name
    return kernel_source or ""


def _topology_rank(topology: str) -> int:
    """Single-node, switch-connected first; pairwise NVLink next; several nodes last."""
    t = (topology or "").lower()
    return 2 if "node" in t else 1 if "pairwise" in t else 0


def _source_rank(source: str) -> int:
    try:
        return SOURCE_PREFERENCE.index(source)
    except ValueError:
        return len(SOURCE_PREFERENCE)


def dtype_class(dtype: str) -> str:
    d = vocab.canonical_dtype(dtype)
    return DTYPE_CLASS.get(d, d)


def gpu_values(con: duckdb.DuckDBPyConnection, gpu_key: str) -> list[str]:
    """The spellings of ``gpu`` in op_samples that resolve to the given canonical key."""
    out = []
    for (name,) in con.execute("SELECT DISTINCT gpu FROM op_samples WHERE gpu IS NOT NULL").fetchall():
        try:
            if gpus.resolve_key(name) == gpu_key:
                out.append(name)
        except Exception:  # noqa: BLE001 -- a GPU unknown to the spec table is simply not this one
            continue
    return out


def families_with_data(con: duckdb.DuckDBPyConnection, gpu_key: str) -> list[str]:
    names = gpu_values(con, gpu_key)
    if not names:
        return []
    rows = con.execute("SELECT DISTINCT op FROM op_samples WHERE gpu IN (SELECT unnest(?))", [names]).fetchall()
    have = {r[0] for r in rows}
    return [f for f in features.FAMILIES if f in have]


def load_rows(con: duckdb.DuckDBPyConnection, gpu_key: str, family: str) -> list[FamilyRows]:
    """Every slice of (source, software, kernel source, topology, dtype) for one family."""
    ff = features.family_features(family)
    names = gpu_values(con, gpu_key)
    if not names:
        return []
    params = ff.params
    axes = ff.all_axes()
    dur = "coalesce(duration_median_ns, duration_mean_ns)"
    sql = f"""
        WITH r AS (
            SELECT coalesce(source, '') AS source, coalesce(software, '') AS software,
                   coalesce(kernel_source, '') AS kernel_source, coalesce(topology, '') AS topology,
                   lower(coalesce(dtype, 'bf16')) AS dtype, model,
                   {", ".join(params)}, {dur} AS duration_ns
            FROM op_samples
            WHERE gpu IN (SELECT unnest(?)) AND op = ? AND {features.positive_params_sql(family)}
              AND {dur} > 0
        )
        SELECT source, software, kernel_source, topology, dtype, model, {", ".join(params)},
               median(duration_ns) AS duration_ns,
               {features.base_work_sql(family)} AS work, {features.bytes_sql(family)} AS nbytes,
               {", ".join(f"ln({a.sql}) AS ax_{a.name}" for a in axes.values())}
        FROM r
        GROUP BY ALL
        ORDER BY ALL
    """
    cols = con.execute(sql, [names, family]).fetchnumpy()
    if len(cols["duration_ns"]) == 0:
        return []
    keys = list(zip(cols["source"], cols["software"], [kernel_group(family, k) for k in cols["kernel_source"]],
                    cols["topology"], [vocab.canonical_dtype(d) for d in cols["dtype"]]))
    out = []
    for key in sorted(set(keys)):
        mask = np.array([k == key for k in keys])
        out.append(FamilyRows(
            family=family, key=SliceKey(*[str(x) for x in key]),
            params={p: np.asarray(cols[p][mask], float) for p in params},
            model=np.asarray(cols["model"][mask], dtype=object),
            work=np.asarray(cols["work"][mask], float), nbytes=np.asarray(cols["nbytes"][mask], float),
            duration_ns=np.asarray(cols["duration_ns"][mask], float),
            axes_log={name: np.asarray(cols[f"ax_{name}"][mask], float) for name in axes},
        ))
    return out


def rank_key(rows: FamilyRows) -> tuple:
    k = rows.key
    # The user's own traces describe their stack: they win over any imported measurement.
    return (int(k.source != "trace"), _kernel_rank(rows.family, k.kernel_source), _topology_rank(k.topology),
            _source_rank(k.source), tuple(-v for v in _version(k.software)), -len(rows))


def choose_slices(slices: Sequence[FamilyRows], by_source: bool = False) -> dict:
    """The best slice per dtype class (or per (dtype class, source)), by :func:`rank_key`."""
    groups: dict = {}
    for sl in slices:
        cls = dtype_class(sl.key.dtype)
        groups.setdefault((cls, sl.key.source) if by_source else cls, []).append(sl)
    return {g: min(members, key=rank_key) for g, members in groups.items()}


# ---- candidates and folds ----

def _init_rates(spec: gpus.GPUSpec, family: str, dtype: str) -> tuple[float, float]:
    fam = vocab.family(family)
    if fam.kind == "collective":
        # steps per ns (a few us per algorithm step), bytes per ns per direction
        return 1.0 / 3000.0, spec.interconnect_bandwidth_bytes_per_s / 2.0 * 0.75 / 1e9
    return spec.flops_for(dtype) * 0.7 / 1e9, spec.memory_bandwidth_bytes_per_s * 0.8 / 1e9


@dataclass
class Candidate:
    axis_set: str
    form: str
    stats: Stats
    fold_stats: list[tuple[str, Stats]]
    measured: np.ndarray
    predicted: np.ndarray
    row_index: np.ndarray
    fold_of_row: list[str]


def evaluate_candidates(rows: FamilyRows, spec: gpus.GPUSpec,
                        folds: Sequence[holdout.Fold]) -> list[Candidate]:
    ff = features.family_features(rows.family)
    init = _init_rates(spec, rows.family, rows.key.dtype)
    bases: dict[str, tuple] = {}
    out = []
    for axis_set, axes in ff.axis_sets.items():
        X = rows.X(axes)
        margins = [a.margin for a in axes]
        regimes = [a.is_regime for a in axes]
        for form in gridmodel.FORMS:
            if form == "base" and axis_set != next(iter(ff.axis_sets)):
                continue  # the base alone does not depend on the axes
            measured, predicted, index, fold_names, per_fold = [], [], [], [], []
            for fold in folds:
                tr, te = ~fold.test, fold.test
                if tr.sum() < 4:
                    continue
                if form != "grid" and fold.name not in bases:
                    bases[fold.name] = gridmodel.fit_base(rows.work[tr], rows.nbytes[tr], rows.duration_ns[tr], *init)
                gm = gridmodel.fit(X[tr], rows.work[tr], rows.nbytes[tr], rows.duration_ns[tr], form=form,
                                   axis_names=[a.name for a in axes], margins=margins, regimes=regimes,
                                   base=bases.get(fold.name) if form != "grid" else None)
                p = gm.predict(X[te], rows.work[te], rows.nbytes[te])
                per_fold.append((fold.name, ape_stats(rows.duration_ns[te], p)[0]))
                measured.append(rows.duration_ns[te])
                predicted.append(p)
                index.append(np.flatnonzero(te))
                fold_names += [fold.name] * int(te.sum())
            if not measured:
                continue
            m, p = np.concatenate(measured), np.concatenate(predicted)
            out.append(Candidate(axis_set, form, ape_stats(m, p)[0], per_fold, m, p, np.concatenate(index),
                                 fold_names))
    return out


def _eval_row(result: FitResult, family: str, dtype: str, kind: str, name: str, stats: Stats | None = None,
              **extra) -> dict:
    row = {"run_id": result.run_id, "gpu": result.gpu, "family": family, "dtype": dtype, "kind": kind,
           "name": name}
    if stats is not None:
        row.update(rows=stats.rows, refused_rows=stats.refused_rows, mape_pct=_nan_none(stats.mape_pct),
                   median_ape_pct=_nan_none(stats.median_ape_pct), p90_ape_pct=_nan_none(stats.p90_ape_pct))
    row.update(extra)
    return row


def _nan_none(v: float):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def fit_family(rows: FamilyRows, spec: gpus.GPUSpec, result: FitResult) -> FittedFamily:
    ff = features.family_features(rows.family)
    folds = holdout.plan(rows.params, ff.line_params, ff.group_params, rows.model)
    cands = evaluate_candidates(rows, spec, folds)
    dtype = rows.key.dtype
    first_set = next(iter(ff.axis_sets))
    if cands:
        best = min(cands, key=lambda c: (c.stats.selection_score, gridmodel.FORMS.index(c.form)))
        axis_set, form = best.axis_set, best.form
    else:
        best, axis_set, form = None, first_set, "base+grid"
        result.notes.append(f"{rows.family} {dtype}: too few distinct shapes for an honest hold-out; "
                            "fitted without a held-out error")
    for c in cands:
        result.evals.append(_eval_row(result, rows.family, dtype, "candidate", f"{c.axis_set}/{c.form}", c.stats,
                                      chosen=c is best))
    if best is not None:
        for name, st in best.fold_stats:
            result.evals.append(_eval_row(result, rows.family, dtype, "fold", name, st, chosen=True))
        ape = np.abs(best.predicted / best.measured - 1.0) * 100.0
        order = np.argsort(-np.nan_to_num(ape, nan=-1.0))[:WORST_SHAPES]
        for rank, j in enumerate(order, 1):
            if not np.isfinite(ape[j]):
                continue
            i = int(best.row_index[j])
            shape = rows.shape_of(i)
            if rows.model[i] is not None and rows.model[i] == rows.model[i]:
                shape["model"] = str(rows.model[i])
            result.evals.append(_eval_row(
                result, rows.family, dtype, "worst", f"{rank}", None, chosen=True,
                shape_json=json.dumps(shape, sort_keys=True), measured_ns=float(best.measured[j]),
                predicted_ns=float(best.predicted[j]), mape_pct=float(ape[j]), test_slice=best.fold_of_row[j]))
    axes = ff.axis_sets[axis_set]
    X = rows.X(axes)
    init = _init_rates(spec, rows.family, dtype)
    gm = gridmodel.fit(X, rows.work, rows.nbytes, rows.duration_ns, form=form, axis_names=[a.name for a in axes],
                       margins=[a.margin for a in axes], regimes=[a.is_regime for a in axes],
                       init_flops_per_ns=init[0], init_bytes_per_ns=init[1])
    train, _ = ape_stats(rows.duration_ns, gm.predict(X, rows.work, rows.nbytes))
    serves = tuple(sorted({d for d, c in DTYPE_CLASS.items() if c == dtype_class(dtype)} | {dtype}))
    return FittedFamily(
        gpu=spec.key, family=rows.family, dtype=dtype, serves_dtypes=serves, axis_set=axis_set, axes=axes,
        model=gm, key=rows.key, rows=len(rows), train=train, heldout=best.stats if best else None,
        folds=tuple(f.name for f in folds),
    )


def covered(train: FamilyRows, test: FamilyRows, axes: Sequence[features.Axis],
            factor: float = COVER_FACTOR) -> np.ndarray:
    """Rows of ``test`` with a ``train`` shape within ``factor`` on every axis."""
    from scipy.spatial import cKDTree

    tree = cKDTree(train.X(axes))
    dist, _ = tree.query(test.X(axes), k=1, p=np.inf)
    return dist <= math.log(factor) + 1e-9


def _cross_pairs(slices: Sequence[FamilyRows]) -> list[tuple[FamilyRows, FamilyRows]]:
    """Ordered (train, test) pairs of different sources, like compared with like.

    Per dtype class and pair of sources, the slices of the kernel rank both sources have
    (e.g. NCCL against NCCL, not NCCL against vLLM's custom all-reduce); when they share none,
    each source's best slice.
    """
    groups: dict = {}
    for s in slices:
        groups.setdefault((dtype_class(s.key.dtype), s.key.source, _kernel_rank(s.family, s.key.kernel_source)),
                          []).append(s)
    best = {g: next(iter(choose_slices(members).values())) for g, members in groups.items()}
    pairs = []
    classes = sorted({g[0] for g in best})
    for cls in classes:
        sources = sorted({g[1] for g in best if g[0] == cls})
        for i, sa in enumerate(sources):
            for sb in sources[i + 1:]:
                ra = {g[2] for g in best if g[:2] == (cls, sa)}
                rb = {g[2] for g in best if g[:2] == (cls, sb)}
                common = sorted(ra & rb)
                if common:
                    a, b = best[(cls, sa, common[0])], best[(cls, sb, common[0])]
                else:
                    a, b = best[(cls, sa, min(ra))], best[(cls, sb, min(rb))]
                pairs += [(a, b), (b, a)]
    return pairs


def cross_source(slices: Sequence[FamilyRows], fitted: dict[str, FittedFamily], spec: gpus.GPUSpec,
                 result: FitResult, min_rows: int) -> None:
    models: dict[int, gridmodel.GridModel] = {}
    for a, b in _cross_pairs([s for s in slices if len(s) >= min_rows]):
        family = a.family
        ff = features.family_features(family)
        primary = fitted.get(dtype_class(a.key.dtype))
        axis_set = primary.axis_set if primary else next(iter(ff.axis_sets))
        form = primary.model.form if primary else "base+grid"
        axes = ff.axis_sets[axis_set]
        if id(a) not in models:
            init = _init_rates(spec, family, a.key.dtype)
            models[id(a)] = gridmodel.fit(a.X(axes), a.work, a.nbytes, a.duration_ns, form=form,
                                          axis_names=[x.name for x in axes], margins=[x.margin for x in axes],
                                          regimes=[x.is_regime for x in axes],
                                          init_flops_per_ns=init[0], init_bytes_per_ns=init[1])
        gm = models[id(a)]
        inside = covered(a, b, axes)
        p = np.full(len(b), np.nan)
        if inside.any():
            p[inside] = gm.predict(b.X(axes)[inside], b.work[inside], b.nbytes[inside])
        st, _ = ape_stats(b.duration_ns, p)
        result.evals.append(_eval_row(
            result, family, a.key.dtype, "cross_source", f"{a.key.source} -> {b.key.source}", st,
            train_slice=a.key.describe(), test_slice=b.key.describe()))


def fit_gpu(cfg: FitConfig, con: duckdb.DuckDBPyConnection | None = None,
            progress: Callable[[str], None] | None = None) -> FitResult:
    """Fit every family (of ``cfg.families``, or all with data) for ``cfg.gpu``."""
    say = progress or (lambda _msg: None)
    spec = gpus.get(cfg.gpu)
    con = con or samples.connect(cfg.trace_dirs, include_embedded=cfg.include_embedded)
    result = FitResult(gpu=spec.key, run_id=f"fit-{spec.key}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}")
    families = list(cfg.families) or families_with_data(con, spec.key)
    result.families = families
    if not families:
        result.notes.append(f"no op_samples rows for GPU {spec.key}")
    for family in families:
        slices = load_rows(con, spec.key, family)
        usable = [s for s in slices if len(s) >= cfg.min_rows]
        if not usable:
            result.notes.append(f"{family}: fewer than {cfg.min_rows} rows for {spec.key}; no model")
            continue
        fitted: dict[str, FittedFamily] = {}
        for cls, rows in choose_slices(usable).items():
            say(f"{spec.key} {family} {rows.key.dtype}: {len(rows)} rows from {rows.key.describe()}")
            fam = fit_family(rows, spec, result)
            fitted[cls] = fam
            result.models.append(fam)
        if cfg.cross_source:
            say(f"{spec.key} {family}: cross-source check")
            cross_source(slices, fitted, spec, result, cfg.min_rows)
    return result
