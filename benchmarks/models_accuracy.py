"""Accuracy of the per-op duration models and the predictor's cost per call.

Prints, per GPU x family x dtype, the held-out error of the fitted models (MAPE, median and p90
absolute percentage error over honest hold-outs: whole grid lines, head layouts, models -- see
revati/replay/model_fit/holdout.py), the cross-source disagreement (fit on one measurement source,
predict another's shapes: the noise floor between software stacks), and what one predictor
call costs, cached and uncached, on a stream of LLM-serving-like op shapes.

Usage::

    python benchmarks/models_accuracy.py                       # embedded h100, a100, h200, b200 models
    python benchmarks/models_accuracy.py --refit               # refit from op_samples first
    python benchmarks/models_accuracy.py --gpu h100 --json out.json

Then one table for every GPU: the prediction ladder per software stack (revati.replay.prediction.ladder_report:
within-stack hold-outs, cross-stack error, the shipped models and the tuned roofline on each
stack's measured shapes).

``--refit`` recomputes every held-out number from the kernel database (embedded traces/ and
$REVATI_HOME/traces) instead of reading what ``revati models fit`` stored; nothing is saved.
"held-out" counts held-out predictions: a row held out by two folds (a grid line of m and one
of n) is predicted, and counted, twice.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

TARGET_FAMILIES = ("gemm", "attn_prefill", "attn_decode", "all_reduce")
TARGET_MAPE_PCT = 5.0


def accuracy_rows(gpu: str, models_dir, refit: bool, trace_dirs) -> tuple[list[dict], list[dict], str]:
    from revati.replay.model_fit import fitting, model_report

    if refit:
        result = fitting.fit_gpu(fitting.FitConfig(gpu=gpu, trace_dirs=tuple(trace_dirs)))
        models = [{"family": m.family, "dtype": m.dtype, "serves_dtypes": list(m.serves_dtypes),
                   "form": m.model.form, "axis_set": m.axis_set, "rows": m.rows,
                   "fitted_on": f"{m.key.source} {m.key.software} [{m.key.kernel_source}]",
                   "heldout_rows": m.heldout.rows if m.heldout else None,
                   "heldout_mape_pct": m.heldout.mape_pct if m.heldout else None,
                   "heldout_median_ape_pct": m.heldout.median_ape_pct if m.heldout else None,
                   "heldout_p90_ape_pct": m.heldout.p90_ape_pct if m.heldout else None,
                   "heldout_refused_rows": m.heldout.refused_rows if m.heldout else None}
                  for m in result.models]
        cross = [e for e in result.evals if e["kind"] == "cross_source"]
        return models, cross, "refit from op_samples"
    data = model_report.collect(gpu, models_dir)
    models = [{**m, "fitted_on": f"{m['source']} {m['software']} [{m['kernel_source']}]"} for m in data["models"]]
    return models, data["cross_source"], data["models_dir"]


def op_stream(seed: int = 0) -> list[tuple[str, dict, str]]:
    """Distinct op shapes as an emulated Llama-style server meets them (TP 1/2/4, decode and prefill)."""
    rng = random.Random(seed)
    ops = []
    layer_shapes = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]   # (n, k) at TP1
    for tp in (1, 2, 4):
        for n, k in layer_shapes:
            for _ in range(60):
                m = rng.choice([rng.randint(1, 256), rng.randint(256, 8192)])
                nn, kk = (n // tp, k) if n > k else (n, k // tp)
                ops.append(("gemm", {"m": m, "n": nn, "k": kk}, "bf16"))
        heads, kv_heads = 32 // tp, max(8 // tp, 1)
        for _ in range(150):
            ops.append(("attn_decode", {"batch_size": rng.randint(1, 256), "q_tokens": 1,
                                        "kv_len": rng.randint(16, 32768), "num_heads": heads,
                                        "num_kv_heads": kv_heads, "head_dim": 128}, "bf16"))
            q = rng.randint(16, 8192)
            ops.append(("attn_prefill", {"batch_size": 1, "q_tokens": q, "kv_len": q, "num_heads": heads,
                                         "num_kv_heads": kv_heads, "head_dim": 128}, "bf16"))
        if tp > 1:
            for _ in range(40):
                ops.append(("all_reduce", {"message_bytes": 2 * 4096 * rng.randint(1, 8192), "world_size": tp},
                            "bf16"))
    seen, out = set(), []
    for op, p, d in ops:
        key = (op, tuple(sorted(p.items())), d)
        if key not in seen:
            seen.add(key)
            out.append((op, p, d))
    return out


def predictor_cost(gpu: str, models_dir, repeats: int = 5) -> dict:
    from revati.replay.prediction.predictor import load_predictor

    stream = op_stream()
    uncached, cached, per_family = [], [], {}
    fallbacks = {}
    for _ in range(repeats):
        p = load_predictor(gpu, models_dir)
        fam_ns: dict[str, list[int]] = {}
        t_all = 0
        for op, params, dtype in stream:
            t0 = time.perf_counter_ns()
            p.predict_ns(op, params, dtype)
            dt = time.perf_counter_ns() - t0
            t_all += dt
            fam_ns.setdefault(op, []).append(dt)
        uncached.append(t_all / len(stream) / 1e3)
        t0 = time.perf_counter_ns()
        for op, params, dtype in stream:
            p.predict_ns(op, params, dtype)
        cached.append((time.perf_counter_ns() - t0) / len(stream) / 1e3)
        for fam, v in fam_ns.items():
            per_family.setdefault(fam, []).append(statistics.mean(v) / 1e3)
        fallbacks = dict(p.stats.fallbacks)
    return {"calls_per_pass": len(stream), "repeats": repeats,
            "uncached_us_per_call": statistics.median(uncached), "cached_us_per_call": statistics.median(cached),
            "uncached_us_per_call_by_family": {k: statistics.median(v) for k, v in sorted(per_family.items())},
            "fallbacks_in_stream": fallbacks, "models_dir": str(p.models_dir)}


def _fmt(v, digits=1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="append", help="GPU (repeatable) [default: h100, a100]")
    ap.add_argument("--models-dir", default=None, help="folder with <gpu>/models.parquet")
    ap.add_argument("--refit", action="store_true", help="recompute held-out errors from op_samples")
    ap.add_argument("--traces", action="append", default=[], help="extra op_samples folder for --refit")
    ap.add_argument("--repeats", type=int, default=5, help="passes over the op stream for the cost")
    ap.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    gpus_ = args.gpu or ["h100", "a100", "h200", "b200"]
    out = {"gpus": {}}
    for gpu in gpus_:
        models, cross, where = accuracy_rows(gpu, args.models_dir, args.refit, args.traces)
        cost = predictor_cost(gpu, args.models_dir, args.repeats)
        out["gpus"][gpu] = {"models": models, "cross_source": cross, "cost": cost, "from": where}
        print(f"\n== {gpu}: held-out error ({where}) ==")
        print(f"{'family':<16}{'dtype':<11}{'form':<10}{'axes':<19}{'rows':>7}{'held-out':>9}"
              f"{'MAPE%':>7}{'med%':>6}{'p90%':>7}  target  fitted on")
        for m in sorted(models, key=lambda m: (m["family"], m["dtype"])):
            target = ""
            if m["family"] in TARGET_FAMILIES and m["heldout_mape_pct"] is not None:
                target = "ok" if m["heldout_mape_pct"] <= TARGET_MAPE_PCT else "MISSED"
            print(f"{m['family']:<16}{'/'.join(m['serves_dtypes']):<11}{m['form']:<10}{m['axis_set']:<19}"
                  f"{m['rows']:>7}{m['heldout_rows'] or 0:>9}{_fmt(m['heldout_mape_pct']):>7}"
                  f"{_fmt(m['heldout_median_ape_pct']):>6}{_fmt(m['heldout_p90_ape_pct']):>7}  {target:<6}  "
                  f"{m['fitted_on']}")
        if cross:
            print(f"\n-- {gpu}: cross-source check (noise floor between software stacks) --")
            print(f"{'family':<16}{'train -> test':<28}{'covered':>9}{'MAPE%':>7}{'med%':>6}{'p90%':>7}")
            for e in cross:
                cov = (e["rows"] or 0) - (e["refused_rows"] or 0)
                print(f"{e['family']:<16}{e['name']:<28}{cov:>9}{_fmt(e['mape_pct']):>7}"
                      f"{_fmt(e['median_ape_pct']):>6}{_fmt(e['p90_ape_pct']):>7}")
        print(f"\n-- {gpu}: predictor cost ({cost['calls_per_pass']} distinct ops x {cost['repeats']} passes) --")
        print(f"uncached {cost['uncached_us_per_call']:.1f} us/call (target <= 50), "
              f"cached {cost['cached_us_per_call']:.2f} us/call (target <= 2)")
        print("uncached by family: " + ", ".join(f"{k} {v:.1f} us" for k, v in
                                                 cost["uncached_us_per_call_by_family"].items()))
        print(f"roofline fallbacks in the stream: {cost['fallbacks_in_stream'] or 'none'}")
    from revati.replay.prediction import ladder_report

    ladder = [row for gpu in gpus_ for row in ladder_report.evaluate(gpu)]
    out["ladder"] = ladder
    print("\n== the prediction ladder per GPU and software stack (MAPE % / bias %, shapes scored) ==")
    for line in ladder_report.format_rows(ladder):
        print(line)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=2, sort_keys=True, default=str))
        print(f"\nwrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
