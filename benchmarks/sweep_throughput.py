"""Configurations per hour: one `revati sweep` of 16 `vllm serve` configurations, run here and on
a local Ray cluster of 1 and 2 worker nodes.

usage: python benchmarks/sweep_throughput.py [--python VLLM_PYTHON] [--model tiny-llama]
           [--num-prompts 20] [--input-len 64] [--output-len 32]
           [--modes local:1,local:2,ray:1,ray:2] [--json OUT]

The sweep is request rate (2, 4, 8, 16) x max-num-seqs (8, 32) x GPU (H100, A100) of one workload:
each configuration is `revati emulate --serve-port {port} -- vllm serve MODEL --port {port}
--load-format dummy` with revati's client, vLLM's start-up included (what a sweep pays per
configuration). Modes:
  local:N   `revati sweep --jobs N` on this machine;
  ray:N     a Ray cluster started here with `ray start`: a head node with no CPUs for tasks and
            N worker nodes of one CPU each, so N configurations run at once, one per node;
            `revati sweep --ray ADDRESS`. Needs ray (pip install 'revati[ray]').
Printed per mode: wall time, configurations per hour, scaling against the mode with one worker,
and whether every run succeeded. Each mode starts from an empty sweep folder.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vllm_serve_speedup import _python  # noqa: E402

GRID = {"gpus": ["h100", "a100"], "engine": {"max_num_seqs": [8, 32]}, "workload": {"request_rate": [2, 4, 8, 16]}}


def write_sweep(path: Path, out_dir: Path, python: str, model_dir: Path, args: argparse.Namespace) -> Path:
    import yaml

    python = os.path.abspath(python)     # runs start in their own folders; a venv's python is a symlink
    vllm = str(Path(python).parent / "vllm")
    command = (f"{shlex.quote(python)} -m revati emulate -q --gpu {{gpu}} --serve-port {{port}} "
               f"--result-dir {{run_dir}} {{workload_args}} -- {shlex.quote(vllm)} serve {shlex.quote(str(model_dir))} "
               f"--port {{port}} --load-format dummy --max-model-len 1024 {{engine_args}}")
    data = {"name": "throughput", "gpus": GRID["gpus"], "command": command, "engine": GRID["engine"],
            "workload": {**GRID["workload"], "num_prompts": args.num_prompts, "random_input_len": args.input_len,
                         "random_output_len": args.output_len, "seed": 0},
            "output_dir": str(out_dir), "env": {"HF_HUB_OFFLINE": "1"}, "run_timeout_s": 900}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_mode(mode: str, sweep_file: Path) -> dict:
    """One `revati sweep` of the whole grid (a fresh process, as a user runs it) in ``mode``."""
    from revati.sweep.config import load_sweep
    from revati.sweep.flags import check_sweep
    from revati.sweep.runner import read_run_state

    kind, _, n = mode.partition(":")
    workers = int(n or 1)
    cfg = load_sweep(sweep_file)
    shutil.rmtree(cfg.sweep_dir, ignore_errors=True)
    check_sweep(cfg, where=sweep_file)          # asks vllm --help once, before the clock starts
    row: dict = {"mode": mode, "workers": workers}
    sweep = [sys.executable, "-m", "revati", "sweep", str(sweep_file), "-q"]
    if kind == "local":
        row["wall_s"], proc = _timed(sweep + ["--jobs", str(workers)])
    elif kind == "ray":
        from revati.sweep.ray_cluster import LocalRayCluster

        with LocalRayCluster(workers) as cluster:
            row["ray_worker_nodes"] = len(cluster.worker_nodes())
            row["wall_s"], proc = _timed(sweep + ["--ray", cluster.address, "--jobs", str(workers)])
    else:
        raise SystemExit(f"unknown mode {mode!r}: local:N or ray:N")
    runs = cfg.sweep_dir / "runs"
    states = [read_run_state(d) or {} for d in sorted(runs.iterdir())] if runs.is_dir() else []
    row["configurations"] = len(states)
    row["ok"] = sum(1 for st in states if st.get("status") == "ok")
    row["failed"] = [st.get("run_id") for st in states if st.get("status") != "ok"]
    if proc.returncode != 0:
        row["error"] = (proc.stderr or proc.stdout).strip()[-500:]
    row["configs_per_hour"] = row["ok"] / row["wall_s"] * 3600 if row["wall_s"] > 0 else None
    walls = [st["wall_s"] for st in states if st.get("wall_s")]
    row["mean_run_wall_s"] = sum(walls) / len(walls) if walls else None
    if kind == "ray":
        row["nodes_used"] = len({st["node"] for st in states if st.get("node")})
    return row


def _timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True)
    return time.monotonic() - t0, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=None, help="the vLLM environment's python (default: .venv-vllm)")
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--num-prompts", type=int, default=20)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--modes", default="local:1,local:2,ray:1,ray:2")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    python = _python(args.python)
    from revati import models_zoo

    model_dir = models_zoo.model_dir(args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="revati-sweep-bench-") as tmp:
        for mode in args.modes.split(","):
            sweep_file = write_sweep(Path(tmp) / "sweep.yaml", Path(tmp) / f"out-{mode.replace(':', '-')}",
                                     python, model_dir, args)
            row = run_mode(mode.strip(), sweep_file)
            rows.append(row)
            print(f"{mode}: {row['ok']}/{row['configurations']} ok in {row['wall_s']:.0f} s"
                  + (f" ({row['error']})" if row.get("error") else ""), file=sys.stderr, flush=True)
    base = {r["mode"].split(":")[0]: r for r in rows if r["workers"] == 1}
    print(f"revati sweep: 16 configurations of vllm serve {args.model} (rate x max-num-seqs x GPU), "
          f"{args.num_prompts} requests {args.input_len}/{args.output_len} each, on {os.cpu_count()} cores")
    print("mode | workers | nodes used | ok | wall s | mean run wall s | configurations/hour | scaling vs 1 worker")
    for r in rows:
        one = base.get(r["mode"].split(":")[0])
        scale = (one["wall_s"] / r["wall_s"]) if one and r["wall_s"] else None
        mean = f"{r['mean_run_wall_s']:.1f}" if r.get("mean_run_wall_s") else "-"
        print(f"{r['mode']} | {r['workers']} | {r.get('nodes_used', '-')} | {r['ok']}/{r['configurations']} | "
              f"{r['wall_s']:.0f} | {mean} | {r['configs_per_hour']:.0f} | " + (f"{scale:.2f}x" if scale else "-"))
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "num_prompts": args.num_prompts, "rows": rows}, indent=1))
    if any(r["ok"] < r["configurations"] or r.get("error") for r in rows):
        sys.exit("some runs failed: see each mode's line above and its runs' stderr.log")


if __name__ == "__main__":
    main()
