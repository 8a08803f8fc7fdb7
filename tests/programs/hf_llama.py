"""HF transformers on a virtual GPU: a Llama-2-7B-shaped model built from a config (no weights).

usage: python hf_llama.py GPU [--host-cpu]
Prints one JSON object with per-step virtual times; tests/test_hf_emulation.py checks it and
benchmarks/shim_overhead.py reuses it.
"""
import json
import sys

from revati.shim.activate import activate

gpu = sys.argv[1]
# The checks are of GPU time, so no per-kernel host charge: with one (8 us, measured on an H100
# box) batch-1 eager decode is launch-bound, as it is on a real box (traces/gpu/h100-2026-12-05:
# the GPU was busy 27% of an HF generate), and both GPUs would take the same time.
rt = activate({"gpu": gpu, "count_host_cpu": "--host-cpu" in sys.argv, "launch_overhead_ns": 0})

import time  # noqa: E402

import torch  # noqa: E402
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

from revati.shim.vtime import REAL  # noqa: E402

wall = REAL["perf_counter"]
cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
out = {"gpu": rt.gpus.spec.key}
w0 = wall()
with torch.device("cuda"):
    model = LlamaForCausalLM(cfg).to(torch.float16)
model.eval()
out["build_wall_s"] = wall() - w0
out["params"] = sum(p.numel() for p in model.parameters())
out["weights_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
out["allocated_bytes"] = torch.cuda.memory_allocated()


def timed(fn):
    torch.cuda.synchronize()
    v0, w0 = time.perf_counter(), wall()
    res = fn()
    torch.cuda.synchronize()
    return res, time.perf_counter() - v0, wall() - w0


with torch.inference_mode():
    ids = torch.randint(0, 32000, (1, 128), device="cuda")
    ops0 = rt.stats.ops
    res, v, w = timed(lambda: model(ids, use_cache=True))
    out["prefill_1x128"] = {"virtual_ms": v * 1e3, "wall_ms": w * 1e3, "ops": rt.stats.ops - ops0}
    past = res.past_key_values
    nxt = res.logits[:, -1:].argmax(-1)
    steps = []
    for _ in range(4):
        ops0 = rt.stats.ops
        res, v, w = timed(lambda: model(nxt, past_key_values=past, use_cache=True))
        past, nxt = res.past_key_values, res.logits[:, -1:].argmax(-1)
        steps.append({"virtual_ms": v * 1e3, "wall_ms": w * 1e3, "ops": rt.stats.ops - ops0})
    out["decode_1"] = steps

gen, v, w = timed(lambda: model.generate(torch.randint(0, 32000, (2, 64), device="cuda"),
                                         attention_mask=torch.ones(2, 64, dtype=torch.long, device="cuda"),
                                         max_new_tokens=8, do_sample=False, pad_token_id=0))
out["generate"] = {"virtual_ms": v * 1e3, "wall_ms": w * 1e3, "shape": list(gen.shape)}

gc = GenerationConfig(max_new_tokens=8, do_sample=False, eos_token_id=2, pad_token_id=0)
res, v, w = timed(lambda: model.generate_batch(inputs=[list(range(100, 100 + n)) for n in (16, 40, 90)],
                                               generation_config=gc, progress_bar=False))
out["generate_batch"] = {"virtual_ms": v * 1e3, "wall_ms": w * 1e3,
                         "tokens": sorted(len(r.generated_tokens) for r in res.values())}
out["fallbacks"] = rt.predictor.stats.fallback_count
out["dispatch"] = rt.stats.line()
print(json.dumps(out))
