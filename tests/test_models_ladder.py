"""Stacks as data and the prediction ladder: Note [Kernel stacks] (revati/replay/stacks.py) and
Note [Prediction ladder] (revati/replay/prediction/measured.py)."""

from __future__ import annotations

import pytest

import models_synth as synth
from revati import parquet_io, paths, tables, vocab
from revati.replay.model_fit import fitting, model_store
from revati.replay import roofline, stacks
from revati.replay.prediction.measured import MeasuredTable
from revati.replay.prediction.predictor import load_predictor

TORCH_SW = "transformers 5.25.0, torch 2.11.0, triton 3.6.0, python 3.12.3"


@pytest.mark.parametrize("source, software, own, name", [
    ("trace", TORCH_SW, False, "torch-2.11"),
    ("aiconfigurator", "vllm 0.24.0", False, "vllm-0.24.0"),
    ("aiconfigurator", "nccl 2.29.2", False, "nccl-2.29.2"),
    ("vidur", "sarathi-serve (vidur@7d475133)", False, "sarathi-serve"),
    ("trace", TORCH_SW, True, "own:torch-2.11"),
])
def test_a_measurement_names_its_stack(source, software, own, name):
    assert stacks.stack_of(source, software, own) == name


def test_stack_order_own_first_then_named_then_engine_then_newest():
    have = ["vllm-0.14.0", "vllm-0.24.0", "torch-2.11", "sarathi-serve", "own:torch-2.9"]
    assert stacks.order(have, "torch") == ["own:torch-2.9", "torch-2.11", "vllm-0.24.0", "vllm-0.14.0", "sarathi-serve"]
    assert stacks.order(have, "vllm") == ["own:torch-2.9", "vllm-0.24.0", "vllm-0.14.0", "torch-2.11", "sarathi-serve"]
    assert stacks.order(have, "torch", preferred="vllm-0.14")[:2] == ["own:torch-2.9", "vllm-0.14.0"]
    assert stacks.order(have, "vllm", preferred="sarathi-serve")[1] == "sarathi-serve"


def _gemm_rows(stack: str, ms, n=4096, k=4096, scale=1.0):
    # time = 5 us + FLOPs at 500 TFLOP/s: what interpolation linear in FLOPs reproduces exactly
    return [("gemm", "bf16", stack, {"m": m, "n": n, "k": k}, scale * (5_000 + 2 * m * n * k / 500e3)) for m in ms]


def test_exact_shapes_answer_with_their_measurement_and_sweeps_interpolate():
    table = MeasuredTable.from_rows("h100", _gemm_rows("torch-2.11", [16, 64, 256]))
    ns, rung, stack = table.lookup("gemm", {"m": 64, "n": 4096, "k": 4096}, "fp16", ["torch-2.11"])
    assert (rung, stack) == ("measured", "torch-2.11") and ns == pytest.approx(5_000 + 2 * 64 * 4096 ** 2 / 500e3)
    ns, rung, _ = table.lookup("gemm", {"m": 100, "n": 4096, "k": 4096}, "bf16", ["torch-2.11"])
    assert rung == "interpolated" and ns == pytest.approx(5_000 + 2 * 100 * 4096 ** 2 / 500e3)
    assert table.lookup("gemm", {"m": 1000, "n": 4096, "k": 4096}, "bf16", ["torch-2.11"]) is None  # beyond the sweep
    assert table.lookup("gemm", {"m": 64, "n": 4000, "k": 4096}, "bf16", ["torch-2.11"]) is None     # another line
    assert table.lookup("gemm", {"m": 64, "n": 4096, "k": 4096}, "fp8", ["torch-2.11"]) is None      # another dtype


def test_prefill_interpolates_along_the_prompt_with_quadratic_work():
    def law(s):
        return 4_000 + vocab.flops("attn_prefill", _prefill(s)) / 300e3

    table = MeasuredTable.from_rows("h100", [("attn_prefill", "bf16", "torch-2.11", _prefill(s), law(s))
                                             for s in (128, 1024, 4096)])
    ns, rung, _ = table.lookup("attn_prefill", _prefill(512), "bf16", ["torch-2.11"])
    assert rung == "interpolated" and ns == pytest.approx(law(512), rel=1e-6)
    chunk = {**_prefill(512), "kv_len": 2048}  # a chunk after a cached prefix: off the sweep, never interpolated
    assert table.lookup("attn_prefill", chunk, "bf16", ["torch-2.11"]) is None


def _prefill(s):
    return {"batch_size": 1, "q_tokens": s, "kv_len": s, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128}


def test_the_first_stack_in_the_order_that_answers_wins():
    table = MeasuredTable.from_rows("h100", _gemm_rows("vllm-0.24.0", [16, 64, 256], scale=0.8)
                                    + _gemm_rows("torch-2.11", [16, 256]))
    q = {"m": 64, "n": 4096, "k": 4096}
    assert table.lookup("gemm", q, "bf16", ["vllm-0.24.0", "torch-2.11"])[1:] == ("measured", "vllm-0.24.0")
    assert table.lookup("gemm", q, "bf16", ["torch-2.11", "vllm-0.24.0"])[1:] == ("interpolated", "torch-2.11")


@pytest.fixture(scope="module")
def synth_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ladder")
    traces = root / "traces"
    synth.write(synth.rows_for("gemm", synth.GEMM_GRID, noise=0.005), traces / "op_samples-gemm.parquet")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REVATI_HOME", str(root / "home"))
        result = fitting.fit_gpu(fitting.FitConfig(gpu="h100", trace_dirs=(traces,), include_embedded=False,
                                                   cross_source=False))
    model_store.save(result, root / "models")
    return root / "models"


def test_the_ladder_says_which_rung_answered(synth_models):
    p = load_predictor("h100", synth_models, engine="torch")
    p.measured = MeasuredTable.from_rows("h100", _gemm_rows("torch-2.11", [16, 64]))
    assert p.predict_detail("gemm", {"m": 16, "n": 4096, "k": 4096})[1] == "measured"
    assert p.predict_detail("gemm", {"m": 32, "n": 4096, "k": 4096})[1] == "interpolated"
    assert p.predict_full("gemm", {"m": 300, "n": 3000, "k": 1500})[1] == "model"            # inside the grid
    assert p.predict_detail("gemm", {"m": 6000, "n": 4096, "k": 4096})[1] == "regression"    # past it, in margin
    far = {"m": 10 ** 7, "n": 4096, "k": 4096}
    ns, rung = p.predict_detail("gemm", far)
    assert rung == "roofline" and ns == pytest.approx(roofline.roofline_ns(p.spec, "gemm", far, "bf16"))
    assert p.stats.answered == {"measured": 1, "interpolated": 1, "model": 1, "regression": 1, "roofline": 1}


H100_QKV = {"m": 16, "n": 4096, "k": 4096}


def test_the_shipped_data_answers_each_engine_from_its_own_stack():
    # the embedded H100 ground truth (torch-2.11, traces/gpu) and AIConfigurator (vllm-0.24.0)
    # both measured this shape, 4 us apart: which one answers is the engine's (or the user's) choice
    hf = load_predictor("h100", engine="torch").predict_full("gemm", H100_QKV)
    vllm = load_predictor("h100", engine="vllm").predict_full("gemm", H100_QKV)
    named = load_predictor("h100", engine="torch", kernel_stack="vllm-0.19").predict_full("gemm", H100_QKV)
    assert hf[1:] == ("measured", "torch-2.11") and vllm[1:] == ("measured", "vllm-0.24.0")
    assert named[1:] == ("measured", "vllm-0.19.0")
    assert abs(hf[0] / vllm[0] - 1) > 0.05


def test_the_users_own_traces_win_over_everything_shipped():
    row = {"run_id": "mine", "source": "trace", "gpu": "h100_sxm", "software": "torch 2.12.0", "op": "gemm",
           "dtype": "bf16", **H100_QKV, "duration_median_ns": 12_345.0}
    parquet_io.write_table(tables.rows_to_table("op_samples", [row]), "op_samples",
                           paths.user_traces_dir() / "mine" / "op_samples.parquet")
    for engine in ("torch", "vllm"):
        assert load_predictor("h100", engine=engine).predict_full("gemm", H100_QKV) == (
            12_345.0, "measured", "own:torch-2.12")


def test_ladder_report_holds_out_whole_sweep_points_and_never_answers_them_measured():
    from revati.replay.prediction import ladder_report

    rows = _gemm_rows("torch-2.11", [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]) + \
        _gemm_rows("vllm-0.24.0", [1, 4, 16, 64, 256], scale=0.8)
    held = ladder_report._held_sweep_points("gemm", [tuple(p.values()) for *_, p, _ in rows[:10]])
    assert {s[0] for s in held} == {2, 16, 128}           # every third interior m, whole points
    table = MeasuredTable.from_rows("h100", rows)
    (torch_row, vllm_row) = ladder_report.evaluate("h100", families=("gemm",), table=table)
    assert torch_row["stack"] == "torch-2.11" and torch_row["within_kind"] == "held-out sweep points"
    assert torch_row["within_answered_by"] == {"interpolated": 3}
    assert torch_row["within"]["mape_pct"] < 1.0          # the law is linear in FLOPs: interpolation is exact
    # cross-stack: vLLM's measurements answer torch's shapes, 20% faster by construction
    assert torch_row["cross"]["bias_pct"] == pytest.approx(-20.0, abs=3.0)
    assert vllm_row["cross_answered_by"].get("measured", 0) + vllm_row["cross_answered_by"].get("interpolated", 0) > 0
