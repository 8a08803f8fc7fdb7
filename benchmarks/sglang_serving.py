"""SGLang and vLLM serving the same workload on the same virtual GPUs, under revati.

usage: python benchmarks/sglang_serving.py [--sglang-python PY] [--vllm-python PY] [--gpu h100]
           [--cases 8b-tp1,13b-pp4] [--rates 4,16] [--num-prompts 50] [--input-len 128]
           [--output-len 128] [--engines sglang,vllm] [--json OUT]

Each case x rate x engine is one run: `revati emulate --num-gpus TP*PP --serve-port P -- SERVER`
with revati's client sending NUM_PROMPTS random requests of fixed lengths at a Poisson rate
(seed 0, so both engines get the same arrivals and lengths). SERVER is the engine's own server
with its defaults and dummy weights: `python -m sglang.launch_server --model-path M --tp TP
--pp-size PP` (on an H100: FlashAttention 3, decode CUDA graphs, breakable prefill graphs) and
`vllm serve M -tp TP -pp PP` (revati adapts its compile mode: decode CUDA graphs, eager mixed
steps). One predictor times both: the differences come from the engines' host code and
scheduling. Printed per run: the serving metrics predicted, virtual and wall time of the
benchmark phase, and the whole run's wall time with the server's start-up.

The cases: Llama-3-8B on one GPU (the everyday question) and Llama-2-13B with 4-stage pipeline
parallelism (the paper's SGLang case).
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
CASES = {   # name -> (model, tp, pp)
    "8b-tp1": ("llama-3-8b", 1, 1),
    "13b-pp4": ("llama-2-13b", 1, 4),
}
METRICS = ("completed", "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms", "output_throughput",
           "max_concurrent_requests", "virtual_duration_s", "wall_duration_s", "speedup")
COLUMNS = [("case", "case", "{}"), ("engine", "engine", "{}"), ("rate", "request_rate", "{}"),
           ("done", "completed", "{}"), ("TTFT ms", "mean_ttft_ms", "{:.1f}"), ("p99 TTFT", "p99_ttft_ms", "{:.1f}"),
           ("TPOT ms", "mean_tpot_ms", "{:.2f}"), ("p99 TPOT", "p99_tpot_ms", "{:.2f}"),
           ("out tok/s", "output_throughput", "{:.0f}"), ("max conc", "max_concurrent_requests", "{}"),
           ("virtual s", "virtual_duration_s", "{:.2f}"), ("wall s", "wall_duration_s", "{:.2f}"),
           ("speedup", "speedup", "{:.2f}x"), ("run wall s", "run_wall_s", "{:.1f}")]


def _python(arg: str | None, env_var: str, venv: str, script: str) -> str:
    cand = arg or os.environ.get(env_var) or str(ROOT / venv / "bin" / "python")
    if not Path(cand).is_file():
        sys.exit(f"no environment at {cand}: run {script} or pass its python")
    return cand


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(engine: str, python: str, model_dir: Path, tp: int, pp: int, port: int,
                   max_model_len: int) -> list[str]:
    if engine == "sglang":
        return [python, "-m", "sglang.launch_server", "--model-path", str(model_dir), "--load-format", "dummy",
                "--port", str(port), "--context-length", str(max_model_len), "--tp", str(tp), "--pp-size", str(pp)]
    return [str(Path(python).parent / "vllm"), "serve", str(model_dir), "--port", str(port), "--load-format", "dummy",
            "--max-model-len", str(max_model_len), "-tp", str(tp), "-pp", str(pp)]


def run_one(engine: str, python: str, model_dir: Path, tp: int, pp: int, rate: str,
            args: argparse.Namespace, out_dir: Path) -> dict:
    port = _free_port()
    cmd = [python, "-m", "revati", "emulate", "-q", "--gpu", args.gpu, "--num-gpus", str(tp * pp),
           "--serve-port", str(port), "--num-prompts", str(args.num_prompts), "--request-rate", rate,
           "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
           "--seed", "0", "--result-dir", str(out_dir), "--",
           *server_command(engine, python, model_dir, tp, pp, port, args.max_model_len)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    run_wall_s = time.monotonic() - t0
    metrics_path = out_dir / "metrics.json"
    if proc.returncode != 0 or not metrics_path.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit {proc.returncode}", "run_wall_s": run_wall_s}
    m = json.loads(metrics_path.read_text())
    return {**{k: m.get(k) for k in METRICS}, "run_wall_s": run_wall_s}


def table(rows: list[dict]) -> str:
    lines = [" | ".join(h for h, _, _ in COLUMNS)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']} | {r['engine']} | {r['request_rate']} | error: {r['error']}")
            continue
        lines.append(" | ".join(f.format(r[k]) if r.get(k) is not None else "-" for _, k, f in COLUMNS))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sglang-python", default=None)
    ap.add_argument("--vllm-python", default=None)
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--cases", default="8b-tp1,13b-pp4")
    ap.add_argument("--engines", default="sglang,vllm")
    ap.add_argument("--rates", default="4,16", help="comma-separated request rates (req/s)")
    ap.add_argument("--num-prompts", type=int, default=50)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()

    from revati.models_zoo import model_dir

    pythons = {}
    for engine in args.engines.split(","):
        if engine == "sglang":
            pythons[engine] = _python(args.sglang_python, "REVATI_SGLANG_PYTHON", ".venv-sglang",
                                      "scripts/install_sglang_env.sh")
        elif engine == "vllm":
            pythons[engine] = _python(args.vllm_python, "REVATI_VLLM_PYTHON", ".venv-vllm",
                                      "scripts/install_vllm_env.sh")
        else:
            sys.exit(f"unknown engine {engine!r}: sglang or vllm")
    rows = []
    with tempfile.TemporaryDirectory(prefix="revati-sglang-bench-") as tmp:
        for case in args.cases.split(","):
            if case not in CASES:
                sys.exit(f"unknown case {case!r}: {', '.join(CASES)}")
            model, tp, pp = CASES[case]
            mdir = model_dir(model)
            for rate in args.rates.split(","):
                for engine, python in pythons.items():
                    out = Path(tmp) / f"{case}-{engine}-{rate}"
                    row = {"case": case, "engine": engine, "request_rate": rate,
                           **run_one(engine, python, mdir, tp, pp, rate, args, out)}
                    rows.append(row)
                    print(table([row]).splitlines()[-1], flush=True)
    print(f"\n{args.num_prompts} requests of {args.input_len}/{args.output_len} tokens per run, "
          f"virtual {args.gpu}, this machine: {os.cpu_count()} cores")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
