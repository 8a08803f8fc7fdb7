"""Ground truth for HF transformers: ``generate`` of a Llama-2-7B-shaped model built from a config
with random weights (no download), timed end to end and traced with ``revati trace``.

Usage (README.md beside this file has the whole GPU session)::

    revati trace -o traces/gt-hf-llama7b-h100 --warmup-steps 1 -- \\
        python benchmarks/gpu_ground_truth/hf_generate.py --batch 1,8 --prompt-len 128,512 \\
        --new-tokens 16 --out traces/gt-hf-llama7b-h100.e2e.jsonl

    # CPU pipeline check (tests/test_gpu_ground_truth.py):
    revati trace -o /tmp/gt-hf --warmup-steps 1 -- python benchmarks/gpu_ground_truth/hf_generate.py --device cpu --tiny

One warm-up ``generate`` (step 0, dropped by ``--warmup-steps 1``), then ``--reps`` timed calls
per (batch, prompt length), each one step. Output lengths are fixed (``min_new_tokens`` =
``max_new_tokens``, no EOS), as a benchmark on a real GPU fixes them. ``--out`` gets one JSON
line per call: end-to-end latency and output tokens per second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DTYPES, Results, parse_ints, pick_device, step  # noqa: E402

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5)
TINY = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=256, max_position_embeddings=256, rms_norm_eps=1e-5)


def build_model(device: torch.device, dtype: torch.dtype, tiny: bool, attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**(TINY if tiny else LLAMA2_7B))
    config._attn_implementation = attn
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)   # random weights, built in place on the device
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    model.generation_config.eos_token_id = None    # never stop early: fixed output length
    model.generation_config.pad_token_id = 0
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--tiny", action="store_true", help="a 2-layer toy config (CPU pipeline check)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default bf16 on cuda, fp32 on cpu")
    p.add_argument("--batch", default=None, help="comma list (default 1,8; tiny: 1,2)")
    p.add_argument("--prompt-len", default=None, help="comma list (default 128,512; tiny: 8)")
    p.add_argument("--new-tokens", type=int, default=None, help="default 16; tiny: 4")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--attn", default="sdpa", help="transformers attn_implementation (sdpa, eager, flash_attention_2)")
    p.add_argument("--out", default=None, help="JSON lines: one per generate call")
    args = p.parse_args(argv)

    device = pick_device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    batches = parse_ints(args.batch or ("1,2" if args.tiny else "1,8"))
    prompts = parse_ints(args.prompt_len or ("8" if args.tiny else "128,512"))
    new_tokens = args.new_tokens or (4 if args.tiny else 16)

    t0 = time.perf_counter()
    model = build_model(device, dtype, args.tiny, args.attn)
    build_s = time.perf_counter() - t0
    vocab = model.config.vocab_size
    results = Results(args.out, {"benchmark": "hf_generate", "device": str(device), "dtype": str(dtype),
                                 "tiny": args.tiny, "attn": args.attn, "model_shape": "tiny" if args.tiny else "llama-2-7b",
                                 "build_s": build_s, "new_tokens": new_tokens})

    def generate(batch: int, prompt: int) -> float:
        ids = torch.randint(3, vocab, (batch, prompt), device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        assert out.shape == (batch, prompt + new_tokens), out.shape
        return elapsed

    with torch.inference_mode():
        generate(batches[0], prompts[0])   # warm-up: step 0
        step()
        for batch in batches:
            for prompt in prompts:
                for rep in range(args.reps):
                    seconds = generate(batch, prompt)
                    step()
                    results.add(batch_size=batch, prompt_len=prompt, new_tokens=new_tokens, rep=rep,
                                e2e_latency_s=seconds, output_tokens_per_s=batch * new_tokens / seconds)
    results.close()
    print(f"hf_generate: {len(batches) * len(prompts) * args.reps} timed generate calls on {device} ({dtype}), "
          f"model built in {build_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
