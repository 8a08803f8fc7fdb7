"""revati against a GPU ground-truth run (``run_all.sh``): kernels, whole programs, the main job.

    python benchmarks/gpu_ground_truth/compare.py traces/gpu/h100-2026-12-05
    python benchmarks/gpu_ground_truth/compare.py traces/gpu/h100-2026-12-05 --emulate   # + main job

Three tables:

1. **Kernels** (``gt-micro/op_samples``: the traced device time of every GEMM and attention
   shape of the model zoo at TP 1/2/4/8): the shipped models alone, the prediction ladder
   without this run's stack (out-of-stack), the ladder within the stack on held-out sweep
   points, and the tuned roofline (70% of peak FLOP/s, 80% of HBM bandwidth, +5 us) against
   the measurement: MAPE and bias per family (:func:`kernel_table`).
2. **A real program** (``gt-hf``: HF ``generate`` of a Llama-2-7B shape): ``revati replay``'s
   per-family GPU time, predicted against measured (stored by the run's import as
   ``replay-<gpu>.json``, since the full kernel trace is too large to ship).
3. **The main job** (``main-*/``: ``hf_cb --native`` on the GPU box): with ``--emulate``, the same
   workload under ``revati emulate --gpu GPU`` here, TTFT/TPOT/E2EL/duration side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

FAMILIES = ("gemm", "attn_prefill", "attn_decode")
PARAMS = {"gemm": ("m", "n", "k"),
          "attn_prefill": ("batch_size", "q_tokens", "kv_len", "num_heads", "num_kv_heads", "head_dim"),
          "attn_decode": ("batch_size", "q_tokens", "kv_len", "num_heads", "num_kv_heads", "head_dim")}
MAIN_METRICS = ("mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "mean_e2el_ms", "duration")
# The emulation flags of a native run, from the workload its metrics.json records.
WORKLOAD_FLAGS = ("model", "num_prompts", "request_rate", "random_input_len", "random_output_len", "seed",
                  "warmup_requests")


def _ape(pred: float, meas: float) -> float:
    return abs(pred - meas) / meas * 100.0


def _summary(pairs: list[tuple[float, float]]) -> dict:
    apes = [_ape(p, m) for p, m in pairs]
    bias = [(p - m) / m * 100.0 for p, m in pairs]
    return {"n": len(pairs), "mape_pct": statistics.fmean(apes), "median_ape_pct": statistics.median(apes),
            "bias_pct": statistics.fmean(bias)}


# Held out of the run's own stack for the interpolation rung: sweep points between measured
# neighbours (every GEMM m that is not a power of two; decode KV 1024; prefill 512 and 2048).
HELD_OUT_SWEEP = {"gemm": ("m", {24, 48, 96, 192, 384, 768, 1536, 3072, 6144}),
                  "attn_decode": ("kv_len", {1024}), "attn_prefill": ("q_tokens", {512, 2048})}


def kernel_table(folder: Path, gpu: str) -> dict:
    """Per family, four answers against the traced device time:

    - ``models``: the shipped fitted models alone (no measured rung), as before the ladder;
    - ``ladder_other_stacks``: the full ladder with every shipped measurement except this run's
      (its stack is new to revati: the out-of-stack error a user of this stack would see
      before tracing their own box);
    - ``ladder_held_out``: the ladder with this run's own rows minus the held-out sweep points
      (HELD_OUT_SWEEP), scored on those points only: the interpolation rung within a stack;
    - ``tuned_roofline``: 70% of peak FLOP/s, 80% of HBM bandwidth, +5 us.
    """
    from revati import paths
    from revati.replay import roofline, stacks
    from revati.replay.prediction.measured import MeasuredTable
    from revati.replay.prediction.predictor import load_predictor

    rows = pq.read_table(folder / "gt-micro" / "op_samples.parquet").to_pylist()
    stack = stacks.stack_of(rows[0]["source"], rows[0]["software"])
    models_only = load_predictor(gpu, measured=False)
    others = load_predictor(gpu, measured=False, engine="torch")
    others.measured = MeasuredTable(gpu, roots=[(paths.embedded_traces_dir() / "imports", False)], cache=False)
    held_rows, kept = [], []
    for r in rows:
        axis, held = HELD_OUT_SWEEP.get(r["op"], (None, set()))
        (held_rows if axis and r[axis] in held else kept).append(r)
    own = load_predictor(gpu, measured=False, engine="torch")
    own.measured = MeasuredTable.from_rows(gpu, [(r["op"], r["dtype"], stack, {p: r[p] for p in PARAMS[r["op"]]},
                                                  r["duration_median_ns"]) for r in kept if r["op"] in PARAMS])
    tuned = roofline.RooflineParams(kernel_floor_ns=5_000.0)
    out: dict = {}
    for fam in FAMILIES:
        fam_rows = [r for r in rows if r["op"] == fam]
        if not fam_rows:
            continue
        t: dict = {"stack": stack}
        for name, predictor, subset in (("models", models_only, fam_rows), ("ladder_other_stacks", others, fam_rows),
                                        ("ladder_held_out", own, [r for r in held_rows if r["op"] == fam])):
            pairs, by = [], {}
            for r in subset:
                ns, how = predictor.predict_detail(fam, {p: r[p] for p in PARAMS[fam]}, r["dtype"])
                pairs.append((ns, r["duration_median_ns"]))
                by[how] = by.get(how, 0) + 1
            t[name] = {**_summary(pairs), "answered_by": by} if pairs else None
        t["tuned_roofline"] = _summary([(roofline.roofline_ns(models_only.spec, fam, {p: r[p] for p in PARAMS[fam]},
                                                              r["dtype"], tuned), r["duration_median_ns"])
                                        for r in fam_rows])
        out[fam] = t
    return out


def program_table(folder: Path, gpu: str) -> dict:
    path = folder / "gt-hf" / f"replay-{gpu}.json"
    if not path.is_file():
        return {}
    rep = json.loads(path.read_text())
    return {"families": rep.get("families", rep.get("by_family")), "total_predicted_ns": rep.get("total_predicted_ns"),
            "total_measured_ns": rep.get("total_measured_ns")}


def _native_runs(folder: Path) -> list[Path]:
    return sorted(p.parent for p in folder.glob("main-*/*/metrics.json"))


def emulate_like(native: Path, gpu: str, out_dir: Path) -> dict:
    workload = json.loads((native / "metrics.json").read_text())["workload"]
    cmd = [sys.executable, "-m", "revati", "emulate", "--gpu", gpu, "--quiet", "--result-dir", str(out_dir)]
    for key in WORKLOAD_FLAGS:
        if key in workload and key != "warmup_requests":
            cmd += [f"--{key.replace('_', '-')}", str(workload[key])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return json.loads((out_dir / "metrics.json").read_text())


def main_job_table(folder: Path, gpu: str, emulate: bool) -> list[dict]:
    rows = []
    cache: dict[tuple, dict] = {}
    for native in _native_runs(folder):
        m = json.loads((native / "metrics.json").read_text())
        row = {"run": f"{native.parent.name}/{native.name}", "native": {k: m.get(k) for k in MAIN_METRICS},
               "warmup_requests": m["workload"].get("warmup_requests", 0), "model": m["workload"].get("model")}
        if emulate:
            key = tuple(str(m["workload"].get(k)) for k in WORKLOAD_FLAGS if k != "warmup_requests")
            if key not in cache:
                with tempfile.TemporaryDirectory() as tmp:
                    cache[key] = emulate_like(native, gpu, Path(tmp))
            e = cache[key]
            row["emulated"] = {k: e.get(k) for k in MAIN_METRICS}
            row["host_time_share"] = e.get("host_time_share")
        rows.append(row)
    return rows


def _f(v, d=1):
    return "-" if v is None else f"{v:.{d}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="a ground-truth folder (traces/gpu/<gpu>-<date>)")
    ap.add_argument("--gpu", default="h100", help="the GPU the run was on")
    ap.add_argument("--emulate", action="store_true", help="also emulate each main-job run here (minutes)")
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args(argv)
    out = {"folder": str(args.folder), "gpu": args.gpu,
           "kernels": kernel_table(args.folder, args.gpu), "program": program_table(args.folder, args.gpu),
           "main_job": main_job_table(args.folder, args.gpu, args.emulate)}

    print(f"== kernels: revati vs traced device time ({args.folder.name}; MAPE % / bias %, shapes) ==")
    cols = (("models", "shipped models"), ("ladder_other_stacks", "ladder, other stacks"),
            ("ladder_held_out", "ladder, held-out sweep"), ("tuned_roofline", "tuned roofline"))
    print(f"{'family':<14}" + "".join(f"{title:>26}" for _, title in cols))
    for fam, t in out["kernels"].items():
        cells = []
        for key, _ in cols:
            c = t.get(key)
            cells.append("-" if not c else f"{_f(c['mape_pct'])} / {_f(c['bias_pct'], 1)} ({c['n']})")
        print(f"{fam:<14}" + "".join(f"{c:>26}" for c in cells))
    for fam, t in out["kernels"].items():
        print(f"  {fam}: answered by -- " + "; ".join(f"{k}: {t[k]['answered_by']}" for k, _ in cols[:3] if t.get(k)))
    if out["kernels"]:
        print(f"measured stack: {next(iter(out['kernels'].values()))['stack']}")
    prog = out["program"]
    if prog.get("families"):
        print("\n== a real program: HF generate, Llama-2-7B shape (revati replay, GPU time) ==")
        print(json.dumps(prog["families"], indent=1, default=str)[:4000])
    print("\n== main job: hf_cb natively on the GPU vs revati emulate here ==")
    print(f"{'run':<18}{'warm-up':>8}  " + "".join(f"{k:>22}" for k in MAIN_METRICS))
    for row in out["main_job"]:
        cells = []
        for k in MAIN_METRICS:
            n = row["native"].get(k)
            e = row.get("emulated", {}).get(k)
            cells.append(f"{_f(n)} / {_f(e)}" if e is not None else _f(n))
        print(f"{row['run']:<18}{row['warmup_requests']:>8}  " + "".join(f"{c:>22}" for c in cells))
    print("(native / emulated; duration in s, the rest in ms)")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
