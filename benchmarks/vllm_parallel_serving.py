"""`vllm serve` with tensor and pipeline parallelism under emulation: the issue-18 cases.

usage: python benchmarks/vllm_parallel_serving.py [--python VLLM_PYTHON] [--gpu h100]
           [--num-prompts 20] [--rates 2,8] [--input-len 128] [--output-len 128]
           [--cases 70b-tp4,70b-tp8,7b-tp8,13b-pp4] [--graphs decode|default|eager] [--json OUT]

Each case x rate is one run of benchmarks/vllm_serve_speedup.py's `run_one`: `revati emulate
--num-gpus TP*PP --serve-port P -- vllm serve MODEL -tp TP -pp PP --load-format dummy` (vLLM's
own multiprocess executor, one worker process per virtual GPU; --graphs as in
vllm_serve_speedup.py, full decode CUDA graphs by default) with
revati's client sending NUM_PROMPTS random requests of fixed lengths at a Poisson rate. Printed
per run: the serving metrics the run predicts, its virtual and wall time, and the wall time of
the whole run with vLLM's start-up. The cases are the paper's (Llama-2-7B TP=8, Llama-2-13B
PP=4) and the question users ask (Llama-2-70B on 4 and 8 H100s).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vllm_serve_speedup import GRAPH_FLAGS, GRAPH_MODES, _python, run_one  # noqa: E402

CASES = {   # name -> (model, tp, pp)
    "70b-tp4": ("llama-2-70b", 4, 1),
    "70b-tp8": ("llama-2-70b", 8, 1),
    "7b-tp8": ("llama-2-7b", 8, 1),
    "13b-pp4": ("llama-2-13b", 1, 4),
}
COLUMNS = [("case", "case", "{}"), ("rate", "request_rate", "{}"), ("done", "completed", "{}"),
           ("TTFT ms", "mean_ttft_ms", "{:.1f}"), ("p99 TTFT", "p99_ttft_ms", "{:.1f}"),
           ("TPOT ms", "mean_tpot_ms", "{:.2f}"), ("out tok/s", "output_throughput", "{:.0f}"),
           ("max conc", "max_concurrent_requests", "{}"), ("virtual s", "virtual_duration_s", "{:.2f}"),
           ("wall s", "wall_duration_s", "{:.2f}"), ("speedup", "speedup", "{:.2f}x"),
           ("run wall s", "run_wall_s", "{:.1f}")]


def table(rows: list[dict]) -> str:
    lines = [" | ".join(h for h, _, _ in COLUMNS)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']} | {r['request_rate']} | error: {r['error']}")
            continue
        lines.append(" | ".join(f.format(r[k]) if r.get(k) is not None else "-" for _, k, f in COLUMNS))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=None)
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--num-prompts", type=int, default=20)
    ap.add_argument("--rates", default="2,8", help="comma-separated request rates (req/s)")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--graphs", choices=sorted(GRAPH_FLAGS), default="decode",
                    help="default: vLLM's default flags; decode: full CUDA graphs for decode only (the "
                         "earlier tables); eager: --enforce-eager")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")

    python = _python(args.python)
    from revati import models_zoo

    rows = []
    with tempfile.TemporaryDirectory(prefix="revati-parallel-bench-") as tmp:
        for case in args.cases.split(","):
            model, tp, pp = CASES[case]
            run_args = argparse.Namespace(**{**vars(args), "model": model, "tp": tp, "pp": pp})
            for rate in args.rates.split(","):
                row = {"case": case, **run_one(python, models_zoo.model_dir(model), run_args, rate.strip(),
                                               Path(tmp) / f"{case}-rate-{rate}")}
                row.pop("breakdown", None)
                rows.append(row)
                print(f"{case} rate {rate}: " + ("error: " + row["error"] if "error" in row else
                                                 f"virtual {row['virtual_duration_s']:.2f} s, "
                                                 f"wall {row['wall_duration_s']:.2f} s, run {row['run_wall_s']:.0f} s"),
                      file=sys.stderr, flush=True)
    print(f"vllm serve on virtual {args.gpu}s, {args.num_prompts} requests {args.input_len}/{args.output_len} "
          f"tokens, {GRAPH_MODES[args.graphs]}")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"gpu": args.gpu, "num_prompts": args.num_prompts, "input_len": args.input_len,
                                         "output_len": args.output_len, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
