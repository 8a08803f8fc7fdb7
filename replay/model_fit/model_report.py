"""`revati models report`: how good the fitted models are, from what `revati models fit` stored.

Sections: per family and dtype the chosen form and its held-out error (MAPE, median and p90
absolute percentage error over honest hold-outs, :mod:`revati.replay.model_fit.holdout`); the error per
hold-out fold; the candidates the form was chosen from; the worst held-out shapes; and the
cross-source check (fit on one source, predict another's shapes): the disagreement between
software stacks, a floor under any model's error.

Example::

    from revati.replay.model_fit import model_report
    data = model_report.collect("h100")          # plain dicts, JSON-ready
    model_report.render(data, console)
"""

from __future__ import annotations

import json
import math
from revati import gpus
from revati.errors import ModelNotFound
from revati.replay.model_fit import model_store

TARGET_FAMILIES = ("gemm", "attn_prefill", "attn_decode", "all_reduce")
TARGET_MAPE_PCT = 5.0


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def collect(gpu: str, models_dir=None) -> dict:
    key = gpus.resolve_key(gpu)
    folder = model_store.find_models_dir(key, models_dir)
    if folder is None:
        raise ModelNotFound(key, models_dir or "the user and embedded model folders")
    stored = model_store.load_dir(folder)
    evals = [{k: _clean(v) for k, v in r.items()} for r in model_store.load_evals(folder).to_pylist()]
    run_ids = {s.run_id for s in stored}
    evals = [e for e in evals if e["run_id"] in run_ids]
    models = []
    for s in stored:
        info = {k: _clean(v) for k, v in s.info.items()}
        models.append({
            "family": s.family, "dtype": s.dtype, "serves_dtypes": list(s.serves_dtypes), "form": s.model.form,
            "axis_set": s.axis_set, "axes": [a.name for a in s.axes],
            "grid_cells": int(s.model.residual.size) if s.model.residual is not None else 0,
            **{k: info.get(k) for k in ("rows", "source", "software", "kernel_source", "topology",
                                        "train_mape_pct", "heldout_mape_pct", "heldout_median_ape_pct",
                                        "heldout_p90_ape_pct", "heldout_rows", "heldout_refused_rows",
                                        "holdout_folds", "run_id", "revati_version")},
        })
    models.sort(key=lambda m: (m["family"], m["dtype"]))
    return {"gpu": key, "models_dir": str(folder), "models": models,
            "folds": [e for e in evals if e["kind"] == "fold"],
            "candidates": [e for e in evals if e["kind"] == "candidate"],
            "worst": [e for e in evals if e["kind"] == "worst"],
            "cross_source": [e for e in evals if e["kind"] == "cross_source"]}


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def render(data: dict, console, worst: int = 3) -> None:
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]Models for {data['gpu']}[/bold] ({data['models_dir']})")
    t = Table(title="Held-out error (honest hold-outs: whole grid lines, head layouts, models)")
    for c in ("family", "dtype", "form", "axes", "fitted on", "rows", "held-out rows", "MAPE %",
              "median %", "p90 %", "refused"):
        t.add_column(c, justify="right" if c in ("rows", "held-out rows", "MAPE %", "median %", "p90 %", "refused") else "left")
    for m in data["models"]:
        mark = ""
        if m["family"] in TARGET_FAMILIES and m["heldout_mape_pct"] is not None:
            mark = " ok" if m["heldout_mape_pct"] <= TARGET_MAPE_PCT else " >5"
        fitted_on = escape(f"{m['source']} {m['software']} [{m['kernel_source']}]")
        t.add_row(m["family"], "/".join(m["serves_dtypes"]), m["form"], ",".join(m["axes"]), fitted_on,
                  str(m["rows"]), str(m["heldout_rows"] or "-"), _pct(m["heldout_mape_pct"]) + mark,
                  _pct(m["heldout_median_ape_pct"]), _pct(m["heldout_p90_ape_pct"]),
                  str(m["heldout_refused_rows"] if m["heldout_refused_rows"] is not None else "-"))
    console.print(t)

    t = Table(title="Per hold-out fold (chosen form)")
    for c in ("family", "dtype", "fold", "rows", "MAPE %", "median %", "p90 %"):
        t.add_column(c)
    for e in data["folds"]:
        t.add_row(e["family"], e["dtype"] or "", e["name"], str(e["rows"]), _pct(e["mape_pct"]),
                  _pct(e["median_ape_pct"]), _pct(e["p90_ape_pct"]))
    console.print(t)

    t = Table(title="Form chosen by held-out error (refused rows count as 100% error in the choice)")
    for c in ("family", "dtype", "candidate", "MAPE %", "p90 %", "refused", "chosen"):
        t.add_column(c)
    for e in data["candidates"]:
        t.add_row(e["family"], e["dtype"] or "", e["name"], _pct(e["mape_pct"]), _pct(e["p90_ape_pct"]),
                  str(e["refused_rows"]), "*" if e["chosen"] else "")
    console.print(t)

    if worst > 0:
        t = Table(title=f"Worst held-out shapes (top {worst} per model)")
        for c in ("family", "dtype", "fold", "shape", "measured us", "predicted us", "error %"):
            t.add_column(c)
        per: dict = {}
        for e in data["worst"]:
            k = (e["family"], e["dtype"])
            per[k] = per.get(k, 0) + 1
            if per[k] > worst:
                continue
            shape = json.loads(e["shape_json"] or "{}")
            t.add_row(e["family"], e["dtype"] or "", escape(e["test_slice"] or ""), " ".join(f"{a}={_short(v)}" for a, v in shape.items()),
                      f"{e['measured_ns'] / 1e3:.1f}", f"{e['predicted_ns'] / 1e3:.1f}", _pct(e["mape_pct"]))
        console.print(t)

    t = Table(title="Cross-source check: fit on one source, predict another's shapes it covers (noise floor)")
    for c in ("family", "train -> test", "test rows", "covered", "MAPE %", "median %", "p90 %", "train slice", "test slice"):
        t.add_column(c)
    for e in data["cross_source"]:
        covered = (e["rows"] or 0) - (e["refused_rows"] or 0)
        t.add_row(e["family"], e["name"], str(e["rows"]), str(covered), _pct(e["mape_pct"]),
                  _pct(e["median_ape_pct"]), _pct(e["p90_ape_pct"]), escape(e["train_slice"] or ""),
                  escape(e["test_slice"] or ""))
    console.print(t)


def _short(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def to_json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)
