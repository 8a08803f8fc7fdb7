"""Serve a workload with HF transformers continuous batching on a virtual GPU (revati's main job).

Runs INSIDE an emulated process (``revati emulate`` with no command starts it): builds a model
from its config (no weights), starts transformers' ContinuousBatchingManager, submits each
request of the workload at its arrival time -- a virtual sleep, so idle time costs no wall
time -- and turns the per-token timestamps the manager records (time.perf_counter: virtual) into
``vllm bench serve``'s metrics.

    revati emulate --gpu h100 --num-prompts 16 --request-rate 4      # what `revati emulate` runs
    python -m revati.drivers.hf_cb --help                       # its own flags
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from revati.errors import BadInput, RevatiError
from revati.hostcpu import NOT_COUNTED
from revati.metrics.aggregate import MetricsConfig, compute_metrics
from revati.metrics.records import RequestRecord, write_jsonl
from revati.metrics.result import METRICS_FILE, REQUESTS_FILE, RunExtras, build_result, write_result
from revati.workload import options as workload_options
from revati.workload.spec import PROMPT_FILE_DATASETS, build_workload

# Model shapes known by name (HF config fields); any HF model directory works too.
MODEL_SHAPES: dict[str, dict] = {
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                       max_position_embeddings=4096, rms_norm_eps=1e-5),
    "llama-3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                       max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5),
    "tiny-llama": dict(model_type="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, vocab_size=32000,
                       max_position_embeddings=2048),
}


def known_models() -> list[str]:
    """Every model name --model accepts: the shapes above and the directories of revati.models_zoo."""
    from revati import models_zoo

    return sorted(set(MODEL_SHAPES) | set(models_zoo.names()))


def model_source(model: str, build: bool = True) -> dict | str:
    """What ``--model`` names: a shape above (its config fields), or a model directory.

    A name of revati.models_zoo (README's list: llama-2-70b, qwen2.5-7b, ...) becomes its
    weightless directory (built under REVATI_HOME on first use; with ``build=False`` only the
    name is checked). Anything else must be a Hugging Face model directory: the emulation runs
    offline, so a Hub id is a BadInput, not a download.
    """
    from revati import models_zoo

    if model in MODEL_SHAPES:
        return dict(MODEL_SHAPES[model])
    if model in models_zoo.names():
        return str(models_zoo.model_dir(model)) if build else model
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BadInput(model, "no config.json in this folder: not a Hugging Face model directory")
        return str(path)
    raise BadInput(model, f"unknown model: neither a shipped model ({', '.join(known_models())}) "
                          "nor a model directory")


def model_encoder(model: str):
    """text -> token ids with the model's own tokenizer (sharegpt and custom datasets)."""
    from tokenizers import Tokenizer

    source = model_source(model)
    if isinstance(source, dict):  # a built-in shape: its shipped directory has the tokenizer
        from revati import models_zoo

        source = str(models_zoo.model_dir(model))
    path = Path(source) / "tokenizer.json"
    if not path.is_file():
        raise BadInput(model, "no tokenizer.json in the model directory: sharegpt/custom datasets need one")
    tokenizer = Tokenizer.from_file(str(path))
    return lambda text: tokenizer.encode(text, add_special_tokens=False).ids


def build_model(model: str, dtype: str, device: str = "cuda"):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    source = model_source(model)
    if isinstance(source, dict):
        source.pop("model_type")
        cfg = LlamaConfig(**source)
    else:
        try:
            cfg = AutoConfig.from_pretrained(source)
        except (OSError, ValueError, KeyError) as exc:
            text = str(exc).strip().splitlines()
            raise BadInput(source, f"cannot read its config.json ({text[0] if text else type(exc).__name__})") from None
    with torch.device(device):
        m = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    return m.eval(), cfg


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m revati.drivers.hf_cb", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    ap.add_argument("--model", default="llama-2-7b", help="a shipped model (llama-2-7b, llama-2-70b, llama-3-8b, "
                                                          "qwen2.5-7b, mistral-7b, tiny-llama) or an HF model directory")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    # revati emulate's workload flags with its defaults: run alone, this driver serves the same
    # workload as `revati emulate` with no command
    workload_options.add_argparse_arguments(ap, defaults=workload_options.MAIN_JOB_DEFAULTS)
    ap.add_argument("--warmup-requests", type=int, default=1,
                    help="requests served before the measured workload (like vllm bench serve's test prompt)")
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="continuous batching token budget per step")
    ap.add_argument("--result-dir", default=None, help="write metrics.json and requests.jsonl here")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--native", action="store_true",
                    help="run on this machine's real GPU without revati (the ground truth of an emulation; "
                         "the CPU where there is none, a pipeline check only)")
    return ap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        workload_options.from_values(vars(args))   # a bad workload is a usage error, before the model is built
    except ValueError as exc:
        ap.error(str(exc))
    return args


def run(args: argparse.Namespace) -> dict:
    import logging

    import torch  # cuda is virtual under emulation, a real GPU with --native
    import transformers

    # The Hub kernels package says, for every kernel repo it looks up, that offline mode skips its
    # publisher check: revati runs offline on purpose (no weights, no kernels are fetched).
    logging.getLogger("kernels").setLevel(logging.ERROR)
    from transformers import GenerationConfig

    from revati.shim import runtime

    # Native (a real GPU, no shim): the same workload and metrics, measured; what the emulation of
    # this driver is compared against (benchmarks/gpu_ground_truth/run_all.sh).
    rt = runtime.get() if runtime.active() else None
    real_perf_counter = _real_perf_counter(rt)
    wall0 = real_perf_counter()
    options = workload_options.from_values(vars(args))
    wl_cfg = options.workload()
    workload = build_workload(wl_cfg, model_encoder(args.model) if wl_cfg.dataset_name in PROMPT_FILE_DATASETS else None)
    device = "cuda" if rt is not None or torch.cuda.is_available() else "cpu"
    model, cfg = build_model(args.model, args.dtype, device)
    vocab = cfg.vocab_size
    gen = GenerationConfig(max_new_tokens=max(r.output_tokens for r in workload), do_sample=False,
                           eos_token_id=-1, pad_token_id=0)
    cb_kwargs = {}
    if args.max_batch_tokens:
        from transformers import ContinuousBatchingConfig

        cb_kwargs["continuous_batching_config"] = ContinuousBatchingConfig(max_batch_tokens=args.max_batch_tokens)
    manager = model.init_continuous_batching(generation_config=gen, **cb_kwargs)
    manager.start()
    _warm_up(manager, workload[0], vocab, args.warmup_requests)
    records: dict[str, RequestRecord] = {}
    t0 = time.perf_counter()
    host0, virtual0 = (rt.clock.host_ns(), rt.clock.now()) if rt else (0, 0)
    try:
        for req in workload:
            wait = req.arrival_s - (time.perf_counter() - t0)
            if wait > 0:
                time.sleep(wait)
            ids = _prompt_ids(req, vocab)
            rid = f"req-{req.request_id}"
            records[rid] = RequestRecord(request_id=req.request_id, scheduled_s=req.arrival_s,
                                         send_s=time.perf_counter() - t0, prompt_tokens=req.prompt_tokens)
            manager.add_request(ids, request_id=rid, max_new_tokens=req.output_tokens, record_timestamps=True)
        pending = set(records)
        while pending:
            out = manager.get_result(timeout=60)
            if out is None:
                if not manager.is_running():
                    break
                continue
            rec = records.get(out.request_id)
            if rec is None or not out.is_finished():
                continue
            pending.discard(out.request_id)
            rec.token_times_s = [ts - t0 for ts in (out.timestamps or [])]
            rec.output_tokens = len(out.generated_tokens)
            rec.done_s = rec.token_times_s[-1] if rec.token_times_s else None
            rec.success = out.error is None and rec.output_tokens > 0
            rec.error = out.error or ""
    finally:
        manager.stop(block=True, timeout=30)
    if rt is None and device == "cuda":
        torch.cuda.synchronize()
    duration = time.perf_counter() - t0
    host_share = (rt.clock.host_ns() - host0) / max(1, rt.clock.now() - virtual0) if rt else None
    recs = sorted(records.values(), key=lambda r: r.request_id)
    goodput = options.goodput_slos_ms
    metrics = compute_metrics(recs, duration, MetricsConfig(goodput_slos_ms=goodput))
    wall = real_perf_counter() - wall0
    counted = rt is not None and rt.config.count_host_cpu
    result = build_result(
        metrics, backend="transformers-continuous-batching", model_id=args.model,
        num_prompts=len(workload), request_rate=args.request_rate, burstiness=args.burstiness,
        max_concurrency=args.max_concurrency,
        workload={k: v for k, v in vars(args).items() if k not in ("result_dir", "quiet", "goodput")},
        goodput_slos_ms=dict(goodput),
        extras=RunExtras(
            wall_duration_s=wall, fallback_op_count=rt.gpus.fallback_launches if rt else 0,
            gpu=rt.config.gpu if rt else f"native: {_device_name(device)}",
            model=args.model, engine="transformers", engine_version=transformers.__version__,
            engine_config={"dtype": args.dtype, "max_batch_tokens": args.max_batch_tokens},
            versions={"torch": __import__("torch").__version__, "transformers": transformers.__version__},
            host_cpu=rt.config.host_cpu if counted else (NOT_COUNTED if rt else "native"),
            host_speed_factor=rt.config.host_speed if counted else None,
            host_time_share=min(1.0, host_share) if host_share is not None else None))
    if args.result_dir:
        out_dir = Path(args.result_dir)
        write_result(result, out_dir / METRICS_FILE)
        write_jsonl(recs, out_dir / REQUESTS_FILE)
    return result


def _prompt_ids(req, vocab: int) -> list[int]:
    if req.prompt_token_ids:
        return list(req.prompt_token_ids)
    return [(17 + 7919 * (req.request_id * 131 + i)) % (vocab - 2) + 2 for i in range(req.prompt_tokens)]


def _warm_up(manager, first, vocab: int, count: int) -> None:
    """Serve ``count`` copies of the first request before the clock of the benchmark starts, as
    ``vllm bench serve`` sends one test prompt first: a real GPU's first request pays one-time
    costs (kernel loading, allocator growth) that are not serving performance."""
    pending = set()
    for i in range(count):
        rid = f"warmup-{i}"
        manager.add_request(_prompt_ids(first, vocab), request_id=rid, max_new_tokens=first.output_tokens)
        pending.add(rid)
    while pending:
        out = manager.get_result(timeout=60)
        if out is None:
            if not manager.is_running():
                raise RevatiError("the continuous-batching manager stopped during warm-up")
            continue
        if out.request_id in pending and out.is_finished():
            pending.discard(out.request_id)


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def _real_perf_counter(rt):
    if rt is None:
        return time.perf_counter
    from revati.shim import real

    return real.TIME["perf_counter"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from revati.shim import runtime

    import torch

    if not runtime.active() and not args.native:
        print("this driver runs under emulation: use `revati emulate` (with no command) or "
              "`revati emulate -- python -m revati.drivers.hf_cb ...`; on a real GPU, "
              "--native measures the same workload", file=sys.stderr)
        return 2

    try:
        result = run(args)
    except RevatiError as exc:
        print(f"revati: {exc}", file=sys.stderr)
        return 2
    except torch.cuda.OutOfMemoryError as exc:
        gpu = runtime.get().config.gpu if runtime.active() else _device_name("cuda")
        print(oom_line(exc, args.model, gpu), file=sys.stderr)
        return 1
    if not args.quiet:
        from revati.metrics.summary import print_summary

        print_summary(result)
    failed = result.get("failed", 0)
    return 1 if result.get("completed", 0) == 0 or (failed and not math.isnan(failed) and failed == len(result)) else 0


def oom_line(exc: BaseException, model: str, gpu: str) -> str:
    """One line for a virtual out-of-memory error: the GPU, what was asked, what was free."""
    from revati.shim.allocator import AllocatorOOM

    seen, cause = set(), exc
    while cause is not None and not isinstance(cause, AllocatorOOM) and id(cause) not in seen:
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, AllocatorOOM):
        return (f"revati: out of memory on the virtual {gpu} ({_size(cause.capacity_bytes)}): {model} asked for "
                f"{_size(cause.requested_bytes)} more with {_size(cause.free_bytes)} free "
                f"({_size(cause.allocated_bytes)} in use); try a GPU with more memory, more GPUs or a smaller model")
    text = " ".join(str(exc).split())
    return f"revati: out of memory on the virtual {gpu} running {model}: {text}"


def _size(nbytes: int) -> str:
    gib = nbytes / (1 << 30)
    return f"{gib:.2f} GiB" if gib >= 1 else f"{nbytes / (1 << 20):.0f} MiB"


if __name__ == "__main__":
    sys.exit(main())
