"""Ground truth for vLLM: offline static batches of a Llama-2-7B-shaped model with dummy weights
(``load_format="dummy"``: no download), input length = output length, measured end to end.

Usage (README.md beside this file: needs a GPU box with vLLM installed)::

    # the full grid, untraced (CUDA graphs on, as served): latency and throughput
    python benchmarks/gpu_ground_truth/vllm_static.py --batch 1,2,4,8,16,32,64 --len 128,256,512,1024 \\
        --out traces/gt-vllm-llama7b-h100.e2e.jsonl

    # a small traced subset, eager (every op visible with its kernels; graphs hide them)
    revati trace -o traces/gt-vllm-llama7b-h100 --warmup-steps 1 -- \\
        python benchmarks/gpu_ground_truth/vllm_static.py --batch 1,16,64 --len 128 --eager \\
        --out traces/gt-vllm-llama7b-h100.traced.jsonl

Each (batch, length) runs once untimed (step 0 for the first; vLLM compiles and captures graphs
at start-up, outside any step) and then ``--reps`` timed times, each one step: ``batch``
prompts of ``length`` random token ids, ``SamplingParams(max_tokens=length, min_tokens=length,
ignore_eos=True)`` so every request produces exactly ``length`` tokens. ``--out`` gets one JSON
line per timed call: end-to-end latency, output and total tokens per second.

The engine's model runs in its EngineCore process; it is traced too (every Python process of
the command is) and takes its step marks from this script's (Note [Step marks cross processes]).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Results, parse_ints, step  # noqa: E402

LLAMA2_7B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 1,
    "eos_token_id": 2,
}


def write_model_dir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(LLAMA2_7B_CONFIG, indent=1))
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", default="1,2,4,8,16,32,64")
    p.add_argument("--len", dest="lengths", default="128,256,512,1024", help="input = output length, comma list")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--eager", action="store_true", help="enforce_eager (no CUDA graphs): every op visible in a trace")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.90)
    p.add_argument("--out", default=None, help="JSON lines: one per timed batch")
    args = p.parse_args(argv)

    from vllm import LLM, SamplingParams   # imported here: --help works without vLLM
    try:
        from vllm.inputs import TokensPrompt
    except ImportError:  # older layouts
        TokensPrompt = dict  # noqa: N806 - a TypedDict there anyway

    batches, lengths = parse_ints(args.batch), parse_ints(args.lengths)
    max_len = 2 * max(lengths) + 16
    model_dir = write_model_dir(Path(tempfile.mkdtemp(prefix="llama2-7b-shape-")))
    t0 = time.perf_counter()
    llm = LLM(model=str(model_dir), load_format="dummy", dtype="bfloat16", skip_tokenizer_init=True,
              max_model_len=max_len, max_num_seqs=max(batches), enforce_eager=args.eager,
              gpu_memory_utilization=args.gpu_memory_utilization, seed=0)
    startup_s = time.perf_counter() - t0
    import vllm

    results = Results(args.out, {"benchmark": "vllm_static", "vllm": vllm.__version__, "eager": args.eager,
                                 "model_shape": "llama-2-7b", "startup_s": startup_s, "max_model_len": max_len})
    rng = random.Random(0)

    def run(batch: int, length: int) -> float:
        prompts = [TokensPrompt(prompt_token_ids=[rng.randrange(3, 32000) for _ in range(length)])
                   for _ in range(batch)]
        params = SamplingParams(max_tokens=length, min_tokens=length, ignore_eos=True, temperature=0.0,
                                detokenize=False)
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - start
        produced = sum(len(o.outputs[0].token_ids) for o in outputs)
        if produced != batch * length:
            raise SystemExit(f"vllm_static: expected {batch * length} output tokens, got {produced}")
        return elapsed

    first = True
    for batch in batches:
        for length in lengths:
            run(batch, length)           # untimed: the shapes' first run
            if first:
                step()                   # step 0 = warm-up, dropped by --warmup-steps 1
                first = False
            for rep in range(args.reps):
                seconds = run(batch, length)
                step()
                results.add(batch_size=batch, input_len=length, output_len=length, rep=rep,
                            e2e_latency_s=seconds, output_tokens_per_s=batch * length / seconds,
                            total_tokens_per_s=2 * batch * length / seconds)
                print(f"vllm_static: batch={batch} len={length}: {seconds:.3f} s, "
                      f"{batch * length / seconds:.0f} output tok/s", flush=True)
    results.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
