"""Fitted models on disk: ``<dir>/<gpu>/models.parquet`` and ``<dir>/<gpu>/evaluations.parquet``.

Both tables are defined in :mod:`revati.schema` (``fitted_models``, ``model_evals``) and
written with :func:`revati.parquet_io.write_table` (validated, temp file + rename), so an
interrupted fit never leaves a half-written model where the predictor would load it.

Where models are looked up: the predictor (:func:`model_dirs`) loads the embedded
``models/<gpu>`` and lets ``$REVATI_HOME/models/<gpu>`` (models the user fitted) replace it
per family and dtype; :func:`find_models_dir` (the report) picks an explicit folder, else the
user's, else the embedded one.

Example::

    from revati.replay.model_fit import model_store
    stored = model_store.load("h100")            # list[StoredModel] from the first folder found
    stored[0].family, stored[0].dtype, stored[0].model.form
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from revati import __version__, gpus, parquet_io, paths
from revati.errors import ModelNotFound
from revati.replay import features
from revati.replay.model_fit import gridmodel

MODELS_FILE = "models.parquet"
EVALS_FILE = "evaluations.parquet"


@dataclass
class StoredModel:
    run_id: str
    gpu: str
    family: str
    dtype: str
    serves_dtypes: tuple[str, ...]
    axis_set: str
    axes: tuple[features.Axis, ...]
    model: gridmodel.GridModel
    info: dict  # the row's remaining columns (source, fit statistics, ...)


def _f(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


# Residuals are log-time corrections; stored on a grid of 1/4096 (<= 0.013% error in time) they
# have short binary fractions, and the shipped files compress to a fraction of their size.
RESIDUAL_QUANTUM = 1.0 / 4096.0


def _quantised(residual: np.ndarray) -> list[float]:
    return (np.round(residual.ravel() / RESIDUAL_QUANTUM) * RESIDUAL_QUANTUM).astype(np.float32).tolist()


def models_table(result) -> pa.Table:
    """The ``fitted_models`` table of a :class:`revati.replay.model_fit.fitting.FitResult`."""
    now = time.time_ns()
    rows = []
    for m in result.models:
        gm = m.model
        h = m.heldout
        rows.append({
            "run_id": result.run_id, "gpu": m.gpu, "family": m.family, "dtype": m.dtype,
            "serves_dtypes": list(m.serves_dtypes), "form": gm.form, "axis_set": m.axis_set,
            "axis_names": [a.name for a in m.axes], "axis_num": [list(a.num) for a in m.axes],
            "axis_den": [list(a.den) for a in m.axes], "axis_margin": [a.margin for a in m.axes],
            "axis_kind": [a.stored_kind for a in m.axes],
            "knots": [k.tolist() for k in gm.knots],
            "residual": _quantised(gm.residual) if gm.residual is not None else None,
            "base_params": list(gm.base) if gm.base is not None else None,
            "range_lo": gm.range_lo.tolist(), "range_hi": gm.range_hi.tolist(), "rows": m.rows,
            "source": m.key.source, "software": m.key.software, "kernel_source": m.key.kernel_source,
            "topology": m.key.topology, "train_mape_pct": _f(m.train.mape_pct),
            "heldout_mape_pct": _f(h.mape_pct) if h else None,
            "heldout_median_ape_pct": _f(h.median_ape_pct) if h else None,
            "heldout_p90_ape_pct": _f(h.p90_ape_pct) if h else None,
            "heldout_rows": h.rows if h else None, "heldout_refused_rows": h.refused_rows if h else None,
            "holdout_folds": list(m.folds), "fitted_at_ns": now, "revati_version": __version__,
        })
    from revati import schema

    if not rows:
        return schema.empty("fitted_models")
    return pa.Table.from_pylist(rows, schema=schema.FITTED_MODELS)


def evals_table(result) -> pa.Table:
    from revati import schema

    if not result.evals:
        return schema.empty("model_evals")
    names = schema.MODEL_EVALS.names
    return pa.Table.from_pylist([{k: e.get(k) for k in names} for e in result.evals], schema=schema.MODEL_EVALS)


def save(result, out_dir: os.PathLike | str) -> Path:
    """Write a fit's models and evaluations to ``out_dir/<gpu>/``; returns that folder.

    Families the fit did not attempt (``revati models fit --family gemm``) keep the models and
    evaluations already in the folder, so fitting one family never drops the others.
    """
    folder = Path(out_dir) / result.gpu
    folder.mkdir(parents=True, exist_ok=True)
    attempted = set(getattr(result, "families", ()) or ()) | {m.family for m in result.models}
    models = models_table(result)
    evals = evals_table(result)
    if (folder / MODELS_FILE).is_file():
        models = _keep_others(parquet_io.read_table(folder / MODELS_FILE, "fitted_models"), models, attempted)
        if (folder / EVALS_FILE).is_file():
            evals = _keep_others(parquet_io.read_table(folder / EVALS_FILE, "model_evals"), evals, attempted)
    # Evaluations first: a reader that finds new models always finds their evaluations too.
    parquet_io.write_table(evals, "model_evals", folder / EVALS_FILE)
    parquet_io.write_table(models, "fitted_models", folder / MODELS_FILE)
    return folder


def _keep_others(old: pa.Table, new: pa.Table, attempted: set[str]) -> pa.Table:
    keep = [f not in attempted for f in old.column("family").to_pylist()]
    if not any(keep):
        return new
    return pa.concat_tables([old.filter(pa.array(keep)).cast(new.schema), new])


def model_dirs(gpu: str) -> list[Path]:
    """Folders with ``gpu``'s models in load order: embedded first, then the user's (which win)."""
    key = gpus.resolve_key(gpu)
    return [base / key for base in (paths.embedded_models_dir(), paths.user_models_dir())
            if (base / key / MODELS_FILE).is_file()]


def find_models_dir(gpu: str, models_dir: os.PathLike | str | None = None) -> Path | None:
    """The folder holding ``gpu``'s models, or None when there is none."""
    key = gpus.resolve_key(gpu)
    if models_dir is not None:
        base = Path(models_dir)
        for cand in (base / key, base):
            if (cand / MODELS_FILE).is_file():
                return cand
        return None
    for base in (paths.user_models_dir(), paths.embedded_models_dir()):
        if (base / key / MODELS_FILE).is_file():
            return base / key
    return None


def _from_row(row: dict) -> StoredModel:
    kinds = row.get("axis_kind") or ["product"] * len(row["axis_names"])
    axes = tuple(features.Axis.from_stored(n, num, den, mg, kind) for n, num, den, mg, kind in
                 zip(row["axis_names"], row["axis_num"], row["axis_den"], row["axis_margin"], kinds))
    knots = tuple(np.asarray(k, float) for k in row["knots"])
    residual = None
    if row["residual"] is not None:
        residual = np.asarray(row["residual"], float).reshape(tuple(len(k) for k in knots))
    base = tuple(row["base_params"]) if row["base_params"] is not None else None
    gm = gridmodel.GridModel(
        form=row["form"], axis_names=tuple(row["axis_names"]), knots=knots, residual=residual, base=base,
        range_lo=np.asarray(row["range_lo"], float), range_hi=np.asarray(row["range_hi"], float),
        log_margin=np.log(np.asarray(row["axis_margin"], float)),
    )
    skip = {"axis_names", "axis_num", "axis_den", "axis_margin", "axis_kind", "knots", "residual", "base_params",
            "range_lo", "range_hi"}
    info = {k: v for k, v in row.items() if k not in skip}
    return StoredModel(run_id=row["run_id"], gpu=row["gpu"], family=row["family"], dtype=row["dtype"],
                       serves_dtypes=tuple(row["serves_dtypes"] or (row["dtype"],)),
                       axis_set=row["axis_set"] or "", axes=axes, model=gm, info=info)


def load_dir(folder: os.PathLike | str) -> list[StoredModel]:
    table = parquet_io.read_table(Path(folder) / MODELS_FILE, "fitted_models")
    return [_from_row(r) for r in table.to_pylist()]


def load(gpu: str, models_dir: os.PathLike | str | None = None) -> list[StoredModel]:
    folder = find_models_dir(gpu, models_dir)
    if folder is None:
        where = models_dir if models_dir is not None else f"{paths.user_models_dir()} or {paths.embedded_models_dir()}"
        raise ModelNotFound(gpus.resolve_key(gpu), where)
    return load_dir(folder)


def load_evals(folder: os.PathLike | str) -> pa.Table:
    path = Path(folder) / EVALS_FILE
    if not path.is_file():
        from revati import schema

        return schema.empty("model_evals")
    return parquet_io.read_table(path, "model_evals")
