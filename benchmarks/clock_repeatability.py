"""How repeatable and how GPU-dependent is the virtual clock? (issue: a clock users can trust)

usage: python benchmarks/clock_repeatability.py [--runs 5] [--tp-runs 10] [--gpus h100,a100]
           [--conditions idle,loaded] [--host-cpu native] [--raw-host-cpu] [--num-prompts N]
           [--json OUT]

Part 1, the main job (`revati emulate` with no command: HF continuous batching of a
Llama-2-7B shape, 16 requests at 4 req/s, host CPU counted) RUNS times per GPU and condition;
"loaded" keeps two busy processes on the cores meanwhile. Printed per row: mean TPOT and TTFT
over the runs, their spread ((max - min) / mean), and the same job with --no-host-cpu (GPU time
only, one run: it is exact). The last lines give the A100/H100 TPOT ratio with host time
counted and without it (the kernel models' ratio).

TTFT has a floor no host clock short of a bit-exact one can beat: a request arriving while a
step runs waits for that step to end, anywhere in [0, TPOT), and a host-time difference of a
fraction of a percent shifts every later step boundary against the fixed arrival times. So each
request's wait is a fresh uniform draw per run: the mean over N requests has a standard deviation
of about TPOT / sqrt(12 N), and the expected (max - min) of RUNS such means is d2(RUNS) times
that. Printed as "phase floor"; it shrinks as 1/sqrt(N) (--num-prompts).

Part 2, one 128 MiB all-reduce on two ranks under torchrun (tests/programs/allreduce_torchrun.py),
TP_RUNS times with host CPU counted: per run, each rank's launch-to-synchronize time and how far
apart the ranks finished, against the predicted collective.

Example:
    python benchmarks/clock_repeatability.py --runs 5 --tp-runs 10 --json /tmp/clock.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "tests" / "programs"


@contextlib.contextmanager
def load(condition: str):
    burners = []
    if condition == "loaded":
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for b in burners:
            b.kill()
            b.wait()


def main_job(gpu: str, *extra: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "--gpu", gpu, "-q", "--result-dir", out,
                               *extra], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"main job failed on {gpu}: {proc.stderr[-2000:]}")
        return json.loads((Path(out) / "metrics.json").read_text())


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.mean(values)


# expected range of n normal samples in standard deviations (d2 of quality control charts)
D2 = {2: 1.128, 3: 1.693, 4: 2.059, 5: 2.326, 6: 2.534, 7: 2.704, 8: 2.847, 9: 2.970, 10: 3.078}


def phase_floor(tpot_ms: float, ttft_ms: float, requests: int, runs: int) -> float:
    """Expected TTFT spread from where arrivals fall within a step alone (module docstring)."""
    sigma = tpot_ms / (12 * requests) ** 0.5
    return D2.get(runs, 3.0) * sigma / ttft_ms


def part_main_job(args) -> list[dict]:
    prompts = ["--num-prompts", str(args.num_prompts)] if args.num_prompts else []
    rows = []
    for gpu in args.gpus.split(","):
        exact = main_job(gpu, "--no-host-cpu", *prompts)
        for condition in args.conditions.split(","):
            with load(condition):
                runs = [main_job(gpu, "--host-cpu", args.host_cpu, *(["--raw-host-cpu"] if args.raw_host_cpu else []),
                                 *prompts) for _ in range(args.runs)]
            tpot = [r["mean_tpot_ms"] for r in runs]
            ttft = [r["mean_ttft_ms"] for r in runs]
            rows.append({"gpu": gpu, "condition": condition, "runs": len(runs),
                         "tpot_ms": statistics.mean(tpot), "tpot_spread": spread(tpot), "tpot_runs": tpot,
                         "ttft_ms": statistics.mean(ttft), "ttft_spread": spread(ttft), "ttft_runs": ttft,
                         "tpot_gpu_only_ms": exact["mean_tpot_ms"], "ttft_gpu_only_ms": exact["mean_ttft_ms"],
                         "host_cpu": runs[0].get("host_cpu"), "drift_filter": not args.raw_host_cpu,
                         "requests": runs[0]["completed"]})
            rows[-1]["ttft_phase_floor"] = phase_floor(rows[-1]["tpot_ms"], rows[-1]["ttft_ms"],
                                                       rows[-1]["requests"], len(runs))
            print(f"{gpu:6} {condition:7} TPOT {rows[-1]['tpot_ms']:7.2f} ms (spread {rows[-1]['tpot_spread']:5.1%})  "
                  f"TTFT {rows[-1]['ttft_ms']:8.2f} ms (spread {rows[-1]['ttft_spread']:5.1%}, phase floor "
                  f"{rows[-1]['ttft_phase_floor']:4.1%} for {rows[-1]['requests']} requests)  "
                  f"GPU only: TPOT {exact['mean_tpot_ms']:.2f} TTFT {exact['mean_ttft_ms']:.2f}", flush=True)
    return rows


def part_tp(args) -> list[dict]:
    from revati.replay.prediction.predictor import load_predictor

    predicted_ms = load_predictor("h100").predict_ns(
        "all_reduce", {"message_bytes": 128 * 1024 * 1024, "world_size": 2}, "fp16") / 1e6
    rows = []
    for i in range(args.tp_runs):
        proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "-q", "--num-gpus", "2", "--host-cpu",
                               args.host_cpu, "--", sys.executable, "-m", "torch.distributed.run",
                               "--nproc-per-node", "2", "allreduce_torchrun.py"],
                              capture_output=True, text=True, timeout=600, cwd=PROGRAMS)
        ranks = {r["rank"]: r for r in (json.loads(m) for m in re.findall(r'\{"rank": [^{}]*\}', proc.stdout))}
        if proc.returncode != 0 or sorted(ranks) != [0, 1]:
            raise SystemExit(f"TP run {i} failed: {proc.stderr[-2000:]}")
        row = {"run": i, "rank0_ms": ranks[0]["all_reduce_ms"], "rank1_ms": ranks[1]["all_reduce_ms"],
               "end_apart_us": abs(ranks[0]["t1"] - ranks[1]["t1"]) * 1e6, "predicted_ms": predicted_ms}
        rows.append(row)
        print(f"TP=2 run {i}: rank 0 {row['rank0_ms']:.3f} ms, rank 1 {row['rank1_ms']:.3f} ms, "
              f"ends {row['end_apart_us']:.1f} us apart (collective predicted {predicted_ms:.3f} ms)", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tp-runs", type=int, default=10)
    ap.add_argument("--gpus", default="h100,a100")
    ap.add_argument("--conditions", default="idle,loaded")
    ap.add_argument("--host-cpu", default="native")
    ap.add_argument("--raw-host-cpu", action="store_true", help="without the drift filter (Note [Host-time drift filter])")
    ap.add_argument("--num-prompts", type=int, default=None, help="requests per run (default: the main job's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    main_rows = part_main_job(args) if args.runs else []
    by = {(r["gpu"], r["condition"]): r for r in main_rows}
    ratios = {}
    if ("h100", "idle") in by and ("a100", "idle") in by:
        h, a = by[("h100", "idle")], by[("a100", "idle")]
        ratios = {"a100_over_h100_tpot": a["tpot_ms"] / h["tpot_ms"],
                  "a100_over_h100_tpot_gpu_only": a["tpot_gpu_only_ms"] / h["tpot_gpu_only_ms"]}
        print(f"A100/H100 TPOT: {ratios['a100_over_h100_tpot']:.2f} with host time, "
              f"{ratios['a100_over_h100_tpot_gpu_only']:.2f} GPU only (the kernel models)")
    tp_rows = part_tp(args) if args.tp_runs else []
    if args.json:
        Path(args.json).write_text(json.dumps({"main_job": main_rows, "ratios": ratios, "tp2_all_reduce": tp_rows},
                                              indent=1))


if __name__ == "__main__":
    main()
