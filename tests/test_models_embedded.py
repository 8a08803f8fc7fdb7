"""The shipped models: present for h100 and a100, small, loadable, answering the target families."""

from __future__ import annotations

import pytest

from revati import paths
from revati.replay.model_fit import model_store
from revati.replay.prediction.predictor import load_predictor

TARGETS = ("gemm", "attn_prefill", "attn_decode", "all_reduce")
SHAPES = {
    "gemm": {"m": 512, "n": 6144, "k": 4096},
    "attn_prefill": {"batch_size": 1, "q_tokens": 1024, "kv_len": 1024, "num_heads": 32, "num_kv_heads": 8,
                     "head_dim": 128},
    "attn_decode": {"batch_size": 32, "q_tokens": 1, "kv_len": 2048, "num_heads": 32, "num_kv_heads": 8,
                    "head_dim": 128},
    "all_reduce": {"message_bytes": 1 << 22, "world_size": 4},
}


@pytest.mark.parametrize("gpu, key", [("h100", "h100_sxm"), ("a100", "a100_sxm_80gb")])
def test_embedded_models_answer_the_target_families(gpu, key):
    folder = paths.embedded_models_dir() / key
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 2 * 1024 * 1024
    p = load_predictor(gpu)
    assert p.models_dir == folder
    for fam in TARGETS:
        ns = p.predict_ns(fam, SHAPES[fam], "bf16")
        assert 1e3 < ns < 1e7, (fam, ns)
    assert p.stats.fallback_count == 0
    stored = {(s.family, s.dtype): s for s in model_store.load_dir(folder)}
    for fam in TARGETS:
        s = stored[(fam, "bf16")]
        assert s.info["heldout_mape_pct"] is not None and s.info["heldout_rows"] > 0
