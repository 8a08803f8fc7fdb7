"""The predictor with fitted models: model answers, counted roofline fallbacks, where models load from."""

from __future__ import annotations

import pytest

import models_synth as synth
from revati import paths
from revati.errors import ModelNotFound, UnknownGPU, UnsupportedOp
from revati.replay.model_fit import fitting, model_store
from revati.replay import roofline
from revati.replay.prediction.predictor import Predictor, load_predictor


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    traces = root / "traces"
    synth.write(synth.rows_for("gemm", synth.GEMM_GRID, noise=0.005), traces / "op_samples-gemm.parquet")
    synth.write(synth.rows_for("attn_decode", synth.DECODE_GRID, noise=0.005), traces / "op_samples-decode.parquet")
    with pytest.MonkeyPatch.context() as mp:     # module scope: the autouse home is not set yet
        mp.setenv("REVATI_HOME", str(root / "home"))
        result = fitting.fit_gpu(fitting.FitConfig(gpu="h100", trace_dirs=(traces,), include_embedded=False,
                                                   cross_source=False))
    model_store.save(result, root / "models")
    return root / "models"


GEMM = {"m": 300, "n": 3000, "k": 1500}


def test_modelled_prediction_follows_the_law_and_is_cached(models_dir):
    p = load_predictor("h100", models_dir)
    assert p.models_dir == models_dir / "h100_sxm"
    ns = p.predict_ns("gemm", GEMM, "bf16")
    assert ns == pytest.approx(synth.law_ns("gemm", GEMM), rel=0.03)
    assert p.predict_ns("gemm", dict(reversed(list(GEMM.items()))), "bf16") == ns
    assert p.stats.calls == 2 and p.stats.cache_hits == 1
    assert p.stats.modelled["gemm"] == 1 and p.stats.fallback_count == 0
    dec = {"batch_size": 8, "q_tokens": 1, "kv_len": 1000, "num_heads": 16, "num_kv_heads": 8, "head_dim": 128}
    assert p.predict_ns("attn_decode", dec, "bf16") == pytest.approx(synth.law_ns("attn_decode", dec), rel=0.03)


def test_same_speed_dtype_is_served_by_the_model(models_dir):
    p = load_predictor("h100", models_dir)
    assert p.predict_ns("gemm", GEMM, "fp16") == p.predict_ns("gemm", GEMM, "bfloat16")
    assert p.stats.fallback_count == 0


@pytest.mark.parametrize("op, params, dtype, why", [
    ("gemm", {"m": 10 ** 7, "n": 4096, "k": 4096}, "bf16", "far outside the fitted m range"),
    ("gemm", GEMM, "fp8", "no fp8 model"),
    ("all_reduce", {"message_bytes": 1 << 20, "world_size": 4}, "bf16", "no model for the family"),
    ("attn_decode", {"batch_size": 8, "q_tokens": 4, "kv_len": 1000, "num_heads": 16, "num_kv_heads": 8,
                     "head_dim": 128}, "bf16", "speculative decode: q_tokens never measured"),
])
def test_fallback_is_the_roofline_and_is_counted(models_dir, op, params, dtype, why):
    p = load_predictor("h100", models_dir)
    ns = p.predict_ns(op, params, dtype)
    assert ns == pytest.approx(roofline.roofline_ns(p.spec, op, params, dtype)), why
    assert p.stats.fallbacks[op] == 1 and p.stats.fallback_count == 1
    p.predict_ns(op, params, dtype)                 # cached: counted once per distinct shape
    assert p.stats.fallback_count == 1
    assert f"{op}=1" in p.stats.line()


def test_predict_detail_says_what_answered(models_dir):
    p = load_predictor("h100", models_dir)
    assert p.predict_detail("gemm", GEMM, "bf16")[1] == "model"
    assert p.predict_detail("gemm", GEMM, "fp8")[1] == "roofline"


def test_unknown_op_and_missing_parameter_raise(models_dir):
    p = load_predictor("h100", models_dir)
    with pytest.raises(UnsupportedOp):
        p.predict_ns("conv2d", {"x": 1}, "bf16")
    with pytest.raises(UnsupportedOp):
        p.predict_ns("gemm", {"m": 1, "n": 2}, "bf16")


def test_unknown_gpu_raises_and_a_gpu_without_models_falls_back_everywhere(tmp_path):
    with pytest.raises(UnknownGPU):
        load_predictor("h900")
    p = load_predictor("l4")                        # in the spec table, no models shipped
    assert p.models == {} and p.models_dir is None
    p.predict_ns("gemm", GEMM, "bf16")
    assert p.stats.fallbacks["gemm"] == 1
    with pytest.raises(ModelNotFound):
        load_predictor("h100", tmp_path / "nothing-here")


def test_user_models_take_precedence_over_embedded(models_dir, isolated_home):
    import shutil

    shutil.copytree(models_dir / "h100_sxm", paths.user_models_dir() / "h100_sxm")
    p = load_predictor("h100")
    assert p.models_dir == paths.user_models_dir() / "h100_sxm"
    assert isinstance(p, Predictor) and "gemm" in p.models


def test_models_of_another_gpu_answer_nothing(models_dir):
    p = load_predictor("a100", models_dir / "h100_sxm")   # a folder of h100 models
    assert p.models == {}


def test_user_models_replace_embedded_ones_family_by_family(models_dir, isolated_home):
    import shutil

    import pyarrow as pa

    from revati import parquet_io

    # The user fitted only gemm: embedded attention/collective models must still answer.
    src = models_dir / "h100_sxm" / model_store.MODELS_FILE
    table = parquet_io.read_table(src, "fitted_models")
    gemm_only = table.filter(pa.array([f == "gemm" for f in table.column("family").to_pylist()]))
    user = paths.user_models_dir() / "h100_sxm"
    parquet_io.write_table(gemm_only, "fitted_models", user / model_store.MODELS_FILE)
    p = load_predictor("h100")
    assert p.models_dir == user
    assert p.predict_ns("gemm", GEMM, "bf16") == pytest.approx(synth.law_ns("gemm", GEMM), rel=0.03)
    embedded = model_store.model_dirs("h100")[0]
    assert embedded == paths.embedded_models_dir() / "h100_sxm"
    assert "attn_decode" in p.models                     # from the embedded default
    assert p.models["gemm"].stored_for("bf16").run_id == table.column("run_id")[0].as_py()
    shutil.rmtree(user)
