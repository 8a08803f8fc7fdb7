"""vLLM offline generation, as a user writes it; run under `revati emulate` to time it on a virtual GPU.

usage: python vllm_offline.py MODEL_DIR [--batch 2] [--input-len 16] [--output-len 8]
                              [--max-model-len 256] [--graphs] [--no-prefix-caching]
                              [--max-num-batched-tokens N] [--steps [--stagger]] [--shared-prefix N]

Builds ``vllm.LLM(model=MODEL_DIR, load_format="dummy", enforce_eager=True, ...)`` (or full CUDA
graphs for decode with --graphs) and calls ``generate`` with ``SamplingParams(max_tokens=N,
ignore_eos=True)`` on token-id prompts of exactly --input-len tokens. With --steps it drives
``llm.llm_engine`` one ``step()`` at a time instead and times every step.
Prints one JSON line (prefixed ``RESULT``): output lengths, KV-cache capacity, virtual and wall
seconds (wall only under revati, where time.* is virtual).

Example:
    revati emulate --gpu h100 -- python tests/programs/vllm_offline.py "$(python -m revati.models_zoo tiny-llama)"
"""

from __future__ import annotations

import argparse
import json
import time


def _wall():
    try:
        from revati.shim.vtime import REAL

        return REAL["perf_counter"]
    except ImportError:  # not under revati: the clock is the real one
        return time.perf_counter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--input-len", type=int, default=16)
    ap.add_argument("--output-len", type=int, default=8)
    ap.add_argument("--max-model-len", type=int, default=256)
    ap.add_argument("--graphs", action="store_true", help="full CUDA graphs for decode, no torch.compile")
    ap.add_argument("--no-prefix-caching", action="store_true")
    ap.add_argument("--max-num-batched-tokens", type=int, default=None)
    ap.add_argument("--shared-prefix", type=int, default=0, help="leading prompt tokens all requests share")
    ap.add_argument("--steps", action="store_true", help="drive the engine step by step and time each step")
    ap.add_argument("--stagger", action="store_true",
                    help="with --steps: add the first request alone, the others after its first step")
    ap.add_argument("--compile", action="store_true", help="vLLM's default compilation config (revati runs it without torch.compile)")
    ap.add_argument("--tensor-parallel-size", "--tp", type=int, default=1,
                    help="one worker process per virtual GPU")
    ap.add_argument("--pipeline-parallel-size", "--pp", type=int, default=1,
                    help="pipeline stages, each its own worker process(es) and virtual GPU(s)")
    args = ap.parse_args()

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    wall = _wall()
    kwargs = dict(model=args.model, load_format="dummy", max_model_len=args.max_model_len,
                  enable_prefix_caching=not args.no_prefix_caching, seed=0,
                  tensor_parallel_size=args.tensor_parallel_size,
                  pipeline_parallel_size=args.pipeline_parallel_size)
    if args.max_num_batched_tokens:
        kwargs.update(max_num_batched_tokens=args.max_num_batched_tokens, enable_chunked_prefill=True)
    if args.graphs:
        kwargs["compilation_config"] = {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}
    elif not args.compile:
        kwargs["enforce_eager"] = True
    w0, v0 = wall(), time.perf_counter()
    llm = LLM(**kwargs)
    result = {"init_wall_s": wall() - w0, "init_virtual_s": time.perf_counter() - v0}
    cache = llm.llm_engine.vllm_config.cache_config
    result["num_gpu_blocks"] = cache.num_gpu_blocks
    result["block_size"] = cache.block_size
    result["kv_cache_tokens"] = (cache.num_gpu_blocks or 0) * cache.block_size

    vocab = llm.llm_engine.model_config.get_vocab_size()
    prefix = [10 + (7 * i) % (vocab - 10) for i in range(args.shared_prefix)]
    prompts = [TokensPrompt(prompt_token_ids=prefix + [10 + (31 * r + 7 * i + 3) % (vocab - 10)
                                                       for i in range(args.input_len - len(prefix))])
               for r in range(args.batch)]
    params = SamplingParams(max_tokens=args.output_len, ignore_eos=True, temperature=0.0)

    w0, v0 = wall(), time.perf_counter()
    if args.steps:
        engine = llm.llm_engine
        pending = list(enumerate(prompts))
        first = pending[:1] if args.stagger else pending
        for i, p in first:
            engine.add_request(str(i), p, params)
        pending = pending[len(first):]
        steps, lengths = [], {}
        while engine.has_unfinished_requests() or pending:
            if pending and steps:
                for i, p in pending:
                    engine.add_request(str(i), p, params)
                pending = []
            sw, sv = wall(), time.perf_counter()
            for out in engine.step():
                if out.finished:
                    lengths[out.request_id] = len(out.outputs[0].token_ids)
            steps.append({"virtual_ms": (time.perf_counter() - sv) * 1e3, "wall_ms": (wall() - sw) * 1e3})
        result["steps"] = steps
        result["output_lens"] = [lengths[str(i)] for i in range(len(prompts))]
    else:
        outs = llm.generate(prompts, params, use_tqdm=False)
        result["output_lens"] = [len(o.outputs[0].token_ids) for o in outs]
        result["prompt_lens"] = [len(o.prompt_token_ids) for o in outs]
        result["first_text"] = outs[0].outputs[0].text
        result["first_ids"] = list(outs[0].outputs[0].token_ids)
    result["generate_virtual_s"] = time.perf_counter() - v0
    result["generate_wall_s"] = wall() - w0
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
