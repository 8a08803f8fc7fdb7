"""vLLM offline static batches on virtual GPUs: predicted latency and throughput, wall cost.

usage: python benchmarks/vllm_offline_static.py [--python VLLM_PYTHON] [--models llama-2-7b,llama-3-8b]
           [--gpus a100,h100] [--batches 1,8,32,64] [--lengths 128,512,1024] [--graphs]
           [--host-speed X | --no-host-cpu] [--json OUT]

Each configuration is one `revati emulate` run of tests/programs/vllm_offline.py: a batch of B
prompts of L tokens, each generating L tokens (ignore_eos), engine in-process. Printed per
configuration: predicted end-to-end latency of the batch (virtual s), output throughput
(tokens/s), mean decode step (virtual ms), the wall time the emulation took and the speedup
(virtual / wall of the generate call). VLLM_PYTHON defaults to $REVATI_VLLM_PYTHON, else
.venv-vllm/bin/python (scripts/install_vllm_env.sh).

Example (the issue-6 grid is the default; one configuration):
    python benchmarks/vllm_offline_static.py --models llama-2-7b --gpus h100 --batches 8 --lengths 128
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "tests" / "programs" / "vllm_offline.py"
sys.path.insert(0, str(ROOT))


def _python(arg: str | None) -> str:
    cand = arg or os.environ.get("REVATI_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    if not Path(cand).is_file():
        sys.exit(f"no vLLM environment at {cand}: run scripts/install_vllm_env.sh or pass --python")
    return cand


def run_one(python: str, model_dir: Path, gpu: str, batch: int, length: int, graphs: bool,
            emulate_args: list[str]) -> dict:
    args = [python, "-m", "revati", "emulate", "-q", "--gpu", gpu, *emulate_args, "--", python, str(PROGRAM),
            str(model_dir),
            "--batch", str(batch), "--input-len", str(length), "--output-len", str(length),
            "--max-model-len", str(2 * length + 16), "--steps"]
    if graphs:
        args.append("--graphs")
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}
    t0 = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    total_wall = time.monotonic() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]}
    r = json.loads(lines[-1][len("RESULT "):])
    steps = r["steps"]
    decode = [s["virtual_ms"] for s in steps[1:-1]] or [0.0]
    out_tokens = sum(r["output_lens"])
    return {
        "latency_s": r["generate_virtual_s"],
        "output_tok_per_s": out_tokens / r["generate_virtual_s"] if r["generate_virtual_s"] else 0.0,
        "mean_decode_step_ms": sum(decode) / len(decode),
        "generate_wall_s": r["generate_wall_s"],
        "speedup": r["generate_virtual_s"] / r["generate_wall_s"] if r["generate_wall_s"] else 0.0,
        "run_wall_s": total_wall,
        "kv_cache_tokens": r["kv_cache_tokens"],
        "output_lens_ok": r["output_lens"] == [length] * batch,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=None)
    ap.add_argument("--models", default="llama-2-7b,llama-3-8b")
    ap.add_argument("--gpus", default="a100,h100")
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--lengths", default="128,512,1024")
    ap.add_argument("--graphs", action="store_true", help="full CUDA graphs for decode instead of eager")
    ap.add_argument("--host-speed", type=float, default=None,
                    help="target host CPU speed relative to this machine (revati emulate --host-speed)")
    ap.add_argument("--no-host-cpu", action="store_true",
                    help="count no host CPU time: GPU time, launch overheads and waits only")
    ap.add_argument("--json", default=None, help="write all rows to this file")
    a = ap.parse_args()
    python = _python(a.python)
    emulate_args = (["--host-speed", str(a.host_speed)] if a.host_speed else []) + \
        (["--no-host-cpu"] if a.no_host_cpu else [])

    from revati.models_zoo import write_model_dir

    rows = []
    with tempfile.TemporaryDirectory(prefix="revati-bench-models-") as tmp:
        print(f"{'model':<12} {'gpu':<6} {'batch':>5} {'len':>5} {'latency s':>10} {'out tok/s':>10} "
              f"{'decode ms':>10} {'wall s':>8} {'speedup':>8}", flush=True)
        for model in a.models.split(","):
            model_dir = write_model_dir(model, Path(tmp) / model)
            for gpu in a.gpus.split(","):
                for batch in (int(b) for b in a.batches.split(",")):
                    for length in (int(n) for n in a.lengths.split(",")):
                        r = run_one(python, model_dir, gpu, batch, length, a.graphs, emulate_args)
                        rows.append({"model": model, "gpu": gpu, "batch": batch, "length": length,
                                     "graphs": a.graphs, **r})
                        if "error" in r:
                            print(f"{model:<12} {gpu:<6} {batch:>5} {length:>5} error: {r['error']}", flush=True)
                            continue
                        print(f"{model:<12} {gpu:<6} {batch:>5} {length:>5} {r['latency_s']:>10.3f} "
                              f"{r['output_tok_per_s']:>10.1f} {r['mean_decode_step_ms']:>10.2f} "
                              f"{r['generate_wall_s']:>8.2f} {r['speedup']:>8.2f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
