"""A stand-alone serving model that writes a real ``metrics.json`` -- for sweep tests and demos.

It does not emulate anything: it runs a seeded revati workload through a small discrete-event
model of a continuously batching server (iteration-level scheduling, FCFS admission up to
``--max-num-seqs``; a step's time is a roofline of the step's prefill FLOPs and the weights
read once, on the given GPU's data-sheet numbers) and computes the metrics with revati's
metrics code. Its numbers are a textbook model, not predictions; use ``revati emulate`` for
those. It exists so ``revati sweep`` and ``revati report`` can be exercised end to end by a
real process, and it marks its results ``"engine": "revati-selftest"``.

Example::

    python -m revati.bench.selftest --gpu h100 --request-rate 8 --num-prompts 200 --result-dir out/
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
import time
from pathlib import Path

from revati import gpus
from revati.errors import RevatiError
from revati.metrics.aggregate import MetricsConfig, compute_metrics
from revati.metrics.records import RequestRecord, write_jsonl
from revati.metrics.result import METRICS_FILE, REQUESTS_FILE, RunExtras, build_result, write_result
from revati.workload import options as workload_options
from revati.workload.spec import build_workload

STEP_OVERHEAD_S = 0.002     # scheduler + launch time per iteration, a round number
# A demo's size: big enough for stable percentiles, small enough to run in a blink.
SELFTEST_DEFAULTS = {"num_prompts": 200, "random_input_len": 512, "random_output_len": 128}


def step_time_s(spec: gpus.GPUSpec, params: float, tp: int, prefill_tokens: int, decode_seqs: int) -> float:
    """Roofline time of one iteration: weights read once (bf16), 2 FLOPs per param per token."""
    weight_bytes = 2.0 * params / tp
    flops = 2.0 * params / tp * (prefill_tokens + decode_seqs)
    return STEP_OVERHEAD_S + max(weight_bytes / spec.memory_bandwidth_bytes_per_s, flops / spec.flops_for("bf16"))


def simulate(requests, spec: gpus.GPUSpec, params: float, tp: int, max_num_seqs: int) -> list[RequestRecord]:
    """Token times of every request under iteration-level batching (times in seconds)."""
    records = {r.request_id: RequestRecord(r.request_id, r.arrival_s, send_s=r.arrival_s,
                                           prompt_tokens=r.prompt_tokens) for r in requests}
    pending = [(r.arrival_s, r.request_id, r) for r in requests]
    heapq.heapify(pending)
    waiting: list = []
    running: dict[int, int] = {}     # request id -> tokens still to generate
    now = 0.0
    while pending or waiting or running:
        while pending and pending[0][0] <= now:
            waiting.append(heapq.heappop(pending)[2])
        if not waiting and not running:
            now = pending[0][0]
            continue
        admitted = []
        while waiting and len(running) + len(admitted) < max_num_seqs:
            admitted.append(waiting.pop(0))
        decoding = list(running)
        now += step_time_s(spec, params, tp, sum(r.prompt_tokens for r in admitted), len(decoding))
        for r in admitted:       # prefill ends with the first token
            records[r.request_id].token_times_s.append(now)
            running[r.request_id] = r.output_tokens - 1
        for rid in decoding:
            records[rid].token_times_s.append(now)
            running[rid] -= 1
        for rid in [rid for rid, left in running.items() if left <= 0]:
            del running[rid]
            rec = records[rid]
            rec.done_s, rec.success = now, True
            rec.output_tokens = len(rec.token_times_s)
    return [records[r.request_id] for r in requests]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m revati.bench.selftest", description=__doc__.splitlines()[0])
    ap.add_argument("--result-dir", required=True)
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--model-params-b", type=float, default=7.0, help="parameters, in billions")
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    ap.add_argument("--max-num-seqs", type=int, default=64)
    workload_options.add_argparse_arguments(ap, defaults=SELFTEST_DEFAULTS)
    ap.add_argument("--fail-if-exists", default=None, help="exit 3 without results if this path exists (tests)")
    args = ap.parse_args(argv)
    if args.fail_if_exists and Path(args.fail_if_exists).exists():
        print(f"selftest: failing on purpose ({args.fail_if_exists} exists)", file=sys.stderr)
        return 3
    wall0 = time.perf_counter()
    try:
        spec = gpus.get(args.gpu)
        options = workload_options.from_values(vars(args))
        if options.max_concurrency is not None:
            raise ValueError("--max-concurrency: the selftest model has no client concurrency limit")
        wl = options.workload()
        requests = build_workload(wl)
        records = simulate(requests, spec, args.model_params_b * 1e9, args.tensor_parallel_size, args.max_num_seqs)
    except (RevatiError, ValueError) as exc:
        print(f"selftest: {exc}", file=sys.stderr)
        return 2
    duration_s = max(r.token_times_s[-1] for r in records)
    metrics = compute_metrics(records, duration_s, MetricsConfig(goodput_slos_ms=options.goodput_slos_ms))
    wall_s = time.perf_counter() - wall0
    result = build_result(
        metrics, backend="selftest", model_id=f"synthetic-{args.model_params_b:g}b",
        num_prompts=args.num_prompts, request_rate=args.request_rate, burstiness=args.burstiness,
        max_concurrency=None, workload=wl.to_json(),
        extras=RunExtras(
            wall_duration_s=wall_s, fallback_op_count=0, gpu=spec.key, model=f"synthetic-{args.model_params_b:g}b",
            engine="revati-selftest",
            engine_config={"max_num_seqs": args.max_num_seqs, "tensor_parallel_size": args.tensor_parallel_size},
        ),
    )
    out = Path(args.result_dir)
    write_jsonl(records, out / REQUESTS_FILE)
    write_result(result, out / METRICS_FILE)
    print(f"selftest: {len(records)} requests, {duration_s:.2f} s simulated on {spec.key}, wrote {out / METRICS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
