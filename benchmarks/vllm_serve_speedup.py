"""Online serving under emulation: `vllm serve` + revati's client, virtual vs wall time.

usage: python benchmarks/vllm_serve_speedup.py [--python VLLM_PYTHON] [--model llama-2-7b] [--gpu h100]
           [--num-prompts 200] [--rates 2,8] [--input-len 128] [--output-len 128] [--eager]
           [--max-model-len 2048] [--tp 1] [--pp 1] [--graphs decode|default|eager] [--floor] [--json OUT]

Each request rate is one `revati emulate --serve-port P -- vllm serve MODEL --load-format dummy`
run: the real vLLM API server and engine core (separate processes) on a virtual GPU, and
revati's benchmark client sending NUM_PROMPTS random requests of fixed lengths at a Poisson
rate, all under one timekeeper. Printed per rate: the serving metrics the run predicts (TTFT,
TPOT, ITL, throughput: vllm bench serve's names), the benchmark's virtual duration, the wall
time the benchmark phase took, their ratio (speedup; > 1 means faster than the real GPU would
be), and the wall time of the whole run including vLLM's start-up (model init, KV-cache
profiling, CUDA-graph capture), which a real GPU run pays too.

--floor also runs the same server with one request (start-up only) and subtracts its breakdown
from each rate's, per process: the framework CPU of the benchmark phase alone. No emulation can
take less wall time than that CPU spread over this machine's cores (nor than the busiest process's
share), so virtual / that floor is the highest speedup possible here (Note [Wall-time breakdown]).

--tp N / --pp N run vLLM's own multiprocess executor with one worker process per virtual GPU
(N*M GPUs): benchmarks/vllm_parallel_serving.py runs the issue-18 cases through this script.

--graphs decode (`-O0 --compilation-config {"cudagraph_mode":"FULL_DECODE_ONLY"}`: decode steps in
full CUDA graphs, mixed steps eager) is the default, to compare with earlier tables; --graphs
default runs `vllm serve` with vLLM's own default flags, as revati adapts them (Note [vLLM
compile mode under emulation]); --eager runs every op through the shim.

Example (the issue-6 benchmark: Llama-2-7B, virtual H100, 200 requests):
    python benchmarks/vllm_serve_speedup.py --rates 4 --json /tmp/serve.json
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METRICS = ("completed", "failed", "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms",
           "mean_itl_ms", "mean_e2el_ms", "request_throughput", "output_throughput",
           "max_concurrent_requests", "virtual_duration_s", "wall_duration_s", "speedup")


def _python(arg: str | None) -> str:
    cand = arg or os.environ.get("REVATI_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    if not Path(cand).is_file():
        sys.exit(f"no vLLM environment at {cand}: run scripts/install_vllm_env.sh or pass --python")
    return cand


# --graphs: vLLM's flags for each mode (Note [vLLM compile mode under emulation])
GRAPH_FLAGS = {
    "default": [],   # `vllm serve MODEL` as deployed: revati adapts its compile mode (Note [vLLM compile mode ...])
    "decode": ["-O0", "--compilation-config", '{"cudagraph_mode": "FULL_DECODE_ONLY"}'],
    "eager": ["--enforce-eager"],
}
GRAPH_MODES = {"default": "vLLM's default flags (as revati adapts them)",
               "decode": "full decode CUDA graphs, mixed steps eager", "eager": "eager"}


def _graphs(args: argparse.Namespace) -> str:
    return "eager" if getattr(args, "eager", False) else getattr(args, "graphs", "decode")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_one(python: str, model_dir: Path, args: argparse.Namespace, rate: str, out_dir: Path) -> dict:
    port = _free_port()
    vllm = str(Path(python).parent / "vllm")
    serve = [vllm, "serve", str(model_dir), "--port", str(port), "--load-format", "dummy",
             "--max-model-len", str(args.max_model_len)]
    if args.tp > 1:
        serve += ["-tp", str(args.tp)]
    if args.pp > 1:
        serve += ["-pp", str(args.pp)]
    serve += GRAPH_FLAGS[_graphs(args)]
    cmd = [python, "-m", "revati", "emulate", "-q", "--gpu", args.gpu, "--num-gpus", str(args.tp * args.pp),
           "--serve-port", str(port),
           "--num-prompts", str(args.num_prompts), "--request-rate", rate,
           "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
           "--seed", str(args.seed), "--result-dir", str(out_dir), "--stats-dir", str(out_dir / "stats"), "--", *serve]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    run_wall_s = time.monotonic() - t0
    metrics_path = out_dir / "metrics.json"
    if proc.returncode != 0 or not metrics_path.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"request_rate": rate, "error": " | ".join(tail) or f"exit {proc.returncode}",
                "run_wall_s": run_wall_s}
    m = json.loads(metrics_path.read_text())
    row = {"request_rate": rate, **{k: m.get(k) for k in METRICS}, "run_wall_s": run_wall_s}
    row["total_output_tokens"] = m.get("total_output_tokens")
    # Note [Wall-time breakdown]: where each process's wall time went (whole run, start-up apart)
    from revati.shim.breakdown import run_breakdown

    procs = [json.loads(f.read_text()) for f in sorted((out_dir / "stats").glob("process-*.json"))]
    row["breakdown"] = {f"{p.get('process_name')} ({p.get('pid')})": p["breakdown"] for p in procs if p.get("breakdown")}
    row["breakdown_total"] = run_breakdown(procs, run_wall_s)
    row["cpu_by_name"] = _cpu_by_name(procs)
    return row


_CPU_KINDS = ("framework_cpu_s", "shim_cpu_s", "gc_full_cpu_s", "coordination_cpu_s")


def _cpu_by_name(procs: list[dict]) -> dict[str, dict[str, float]]:
    """CPU seconds of each kind per process name (pids differ between runs; names do not)."""
    out: dict[str, dict[str, float]] = {}
    for p in procs:
        if p.get("breakdown"):
            mine = out.setdefault(str(p.get("process_name")), dict.fromkeys(_CPU_KINDS, 0.0))
            for k in _CPU_KINDS:
                mine[k] += p["breakdown"].get(k, 0.0)
    return out


def add_floor(row: dict, startup: dict, cores: int) -> None:
    """The benchmark phase alone: each process's CPU of each kind in this run minus the
    start-up-only run's; the wall time no emulation on ``cores`` cores can beat (the phase's
    framework CPU spread over the cores, or the busiest process's); the speedup that allows."""
    if "error" in row or "error" in startup:
        return
    base = startup["cpu_by_name"]
    phase = {n: {k: max(v - base.get(n, {}).get(k, 0.0), 0.0) for k, v in kinds.items()}
             for n, kinds in row["cpu_by_name"].items()}
    framework = {n: kinds["framework_cpu_s"] for n, kinds in phase.items()}
    total = sum(framework.values())
    floor_s = max(total / cores, max(framework.values(), default=0.0))
    row["phase_cpu_s"] = phase
    row["phase_framework_cpu_total_s"] = total
    row["floor_wall_s"] = floor_s
    row["ceiling_speedup"] = row["virtual_duration_s"] / floor_s if floor_s > 0 else None


def _table(rows: list[dict]) -> str:
    cols = [("rate", "request_rate", "{}"), ("done", "completed", "{}"), ("TTFT ms", "mean_ttft_ms", "{:.1f}"),
            ("p99 TTFT", "p99_ttft_ms", "{:.1f}"), ("TPOT ms", "mean_tpot_ms", "{:.2f}"),
            ("ITL ms", "mean_itl_ms", "{:.2f}"), ("out tok/s", "output_throughput", "{:.0f}"),
            ("max conc", "max_concurrent_requests", "{}"), ("virtual s", "virtual_duration_s", "{:.2f}"),
            ("wall s", "wall_duration_s", "{:.2f}"), ("speedup", "speedup", "{:.2f}x"),
            ("run wall s", "run_wall_s", "{:.1f}")]
    lines = [" | ".join(h for h, _, _ in cols)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['request_rate']} | error: {r['error']}")
            continue
        lines.append(" | ".join(f.format(r[k]) if r.get(k) is not None else "-" for _, k, f in cols))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=None)
    ap.add_argument("--model", default="llama-2-7b")
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--num-prompts", type=int, default=200)
    ap.add_argument("--rates", default="4", help="comma-separated request rates (req/s; inf for all at once)")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tp", type=int, default=1, help="tensor-parallel size (vLLM -tp)")
    ap.add_argument("--pp", type=int, default=1, help="pipeline-parallel size (vLLM -pp)")
    ap.add_argument("--graphs", choices=sorted(GRAPH_FLAGS), default="decode",
                    help="default: vLLM's default flags; decode: -O0 with full CUDA graphs for decode only "
                         "(mixed steps eager); eager: --enforce-eager")
    ap.add_argument("--eager", action="store_true", help="the same as --graphs eager")
    ap.add_argument("--floor", action="store_true",
                    help="also run start-up only (1 request) and print the benchmark phase's framework CPU "
                         "and the highest speedup it allows on this machine")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()

    python = _python(args.python)
    from revati import models_zoo
    model_dir = models_zoo.model_dir(args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="revati-serve-bench-") as tmp:
        for rate in args.rates.split(","):
            row = run_one(python, model_dir, args, rate.strip(), Path(tmp) / f"rate-{rate}")
            rows.append(row)
            print(f"rate {rate}: " + ("error: " + row["error"] if "error" in row else
                                      f"virtual {row['virtual_duration_s']:.2f} s, wall {row['wall_duration_s']:.2f} s, "
                                      f"speedup {row['speedup']:.2f}x"), file=sys.stderr, flush=True)
        if args.floor:
            once = argparse.Namespace(**{**vars(args), "num_prompts": 1})
            startup = run_one(python, model_dir, once, "inf", Path(tmp) / "startup")
            for row in rows:
                add_floor(row, startup, os.cpu_count() or 1)
    mode = GRAPH_MODES[_graphs(args)]
    par = f" TP={args.tp} PP={args.pp}" if args.tp * args.pp > 1 else ""
    print(f"vllm serve {args.model}{par} on virtual {args.gpu}, {args.num_prompts} requests "
          f"{args.input_len}/{args.output_len} tokens, {mode}")
    print(_table(rows))
    from revati.shim.breakdown import format_line

    for r in rows:
        if "breakdown" not in r:
            continue
        print(f"rate {r['request_rate']}, where the wall time went (whole run, start-up included):")
        for name, b in r["breakdown"].items():
            print("  " + format_line(name, b))
        print("  " + format_line(f"all {r['breakdown_total']['processes']} reporting processes, against the run's wall",
                                 r["breakdown_total"]))
    floors = [r for r in rows if r.get("floor_wall_s")]
    if floors:
        print(f"benchmark phase alone (minus a start-up-only run), on {os.cpu_count()} cores:")
        print("rate | process | framework CPU s | shim CPU s | full GC s | coordination s")
        for r in floors:
            for n, kinds in sorted(r["phase_cpu_s"].items()):
                if sum(kinds.values()) >= 0.005:
                    print(f"{r['request_rate']} | {n} | " + " | ".join(f"{kinds[k]:.2f}" for k in _CPU_KINDS))
        print("rate | framework CPU s, all | floor wall s | wall s | ceiling speedup | speedup")
        for r in floors:
            print(f"{r['request_rate']} | {r['phase_framework_cpu_total_s']:.2f} | {r['floor_wall_s']:.2f} | "
                  f"{r['wall_duration_s']:.2f} | {r['ceiling_speedup']:.2f}x | {r['speedup']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "gpu": args.gpu, "mode": mode, "tp": args.tp, "pp": args.pp,
                                         "num_prompts": args.num_prompts, "input_len": args.input_len,
                                         "output_len": args.output_len, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
