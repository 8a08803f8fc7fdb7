"""Fitting on synthetic op_samples with a known answer; saved models load back identically."""

from __future__ import annotations

import math

import numpy as np
import pytest

import models_synth as synth
from revati import parquet_io
from revati.errors import BadInput, ModelNotFound, UnknownGPU
from revati.replay.model_fit import fitting, model_store
from revati.replay.kernel_db import samples


@pytest.fixture
def traces(tmp_path):
    d = tmp_path / "traces"
    # GEMM: the law times a smooth efficiency in m that only the grid can learn; 1% noise.
    synth.write(synth.rows_for("gemm", synth.GEMM_GRID, noise=0.01,
                               factor=lambda p: math.exp(0.2 * math.sin(math.log(p["m"]) / 3))), d / "op_samples-gemm.parquet")
    synth.write(synth.rows_for("all_reduce", synth.AR_GRID, noise=0.01), d / "op_samples-ar.parquet")
    # A second, slower software stack measuring the same GEMMs: the cross-source check sees it.
    synth.write(synth.rows_for("gemm", synth.GEMM_GRID, dtype="fp16", source="vidur", software="older 0.1",
                               factor=lambda p: 1.2 * math.exp(0.2 * math.sin(math.log(p["m"]) / 3))),
                d / "op_samples-gemm-vidur.parquet")
    # Files of other tables and other names are not read as rows.
    parquet_io.write_table(parquet_io.schema.empty("kernels"), "kernels", d / "kernels.parquet")
    (d / "junk.parquet").write_bytes(b"not parquet")
    return d


def _fit(traces, **kw):
    cfg = fitting.FitConfig(gpu="h100", trace_dirs=(traces,), include_embedded=False, **kw)
    return fitting.fit_gpu(cfg)


def test_samples_view_reads_only_op_samples_files(traces):
    con = samples.connect([traces], include_embedded=False)
    n = con.execute("SELECT count(*) FROM op_samples").fetchone()[0]
    assert n == 2 * len(synth.rows_for("gemm", synth.GEMM_GRID)) + len(synth.rows_for("all_reduce", synth.AR_GRID))


def test_fit_recovers_the_known_answer_with_small_held_out_error(traces):
    result = _fit(traces, families=("gemm", "all_reduce"))
    by = {(m.family, m.dtype): m for m in result.models}
    assert set(by) == {("gemm", "bf16"), ("all_reduce", "bf16")}
    gemm = by[("gemm", "bf16")]
    # The preferred slice is the AIConfigurator one; fp16 is served by the same model.
    assert gemm.key.source == "aiconfigurator" and "fp16" in gemm.serves_dtypes
    assert gemm.model.form == "base+grid"            # chosen by held-out error over base, grid
    assert gemm.heldout.mape_pct < 3.0               # noise is 1%, the law is smooth
    assert {"lines:m", "lines:n", "lines:k"} <= set(gemm.folds)
    assert by[("all_reduce", "bf16")].heldout.mape_pct < 3.0
    cands = [e for e in result.evals if e["kind"] == "candidate" and e["family"] == "gemm"]
    assert {e["name"] for e in cands} == {"mnk/base+grid", "mnk/base", "mnk/grid"}
    assert sum(bool(e["chosen"]) for e in cands) == 1


def test_cross_source_check_reports_the_stack_difference(traces):
    result = _fit(traces, families=("gemm",))
    cross = {e["name"]: e for e in result.evals if e["kind"] == "cross_source"}
    assert set(cross) == {"aiconfigurator -> vidur", "vidur -> aiconfigurator"}
    # The second stack is 20% slower everywhere: fit on one, the other is 1.2x (or 1/1.2x) off.
    assert cross["aiconfigurator -> vidur"]["mape_pct"] == pytest.approx(100 * (1 - 1 / 1.2), abs=2.0)
    assert cross["vidur -> aiconfigurator"]["mape_pct"] == pytest.approx(20.0, abs=2.0)


def test_save_load_round_trip_predicts_identically(traces, tmp_path):
    result = _fit(traces, families=("gemm", "all_reduce"), cross_source=False)
    folder = model_store.save(result, tmp_path / "models")
    assert folder == tmp_path / "models" / "h100_sxm"
    loaded = {(s.family, s.dtype): s for s in model_store.load("h100", tmp_path / "models")}
    for m in result.models:
        s = loaded[(m.family, m.dtype)]
        assert s.model.form == m.model.form and [a.name for a in s.axes] == [a.name for a in m.axes]
        X = np.log(np.array([[100.0, 3000.0, 700.0]])) if m.family == "gemm" else np.log(np.array([[1e6, 4.0]]))
        F, B = np.array([4.2e8]), np.array([5e6])
        # residuals are stored as float32: equal to ~1e-6 relative
        assert s.model.predict(X, F, B)[0] == pytest.approx(m.model.predict(X, F, B)[0], rel=1e-5)
        assert s.info["heldout_mape_pct"] == pytest.approx(m.heldout.mape_pct)
    evals = model_store.load_evals(folder)
    assert evals.num_rows == len(result.evals)


def test_a_failed_save_leaves_the_previous_models_intact(traces, tmp_path, monkeypatch):
    result = _fit(traces, families=("all_reduce",), cross_source=False)
    folder = model_store.save(result, tmp_path / "models")
    before = (folder / model_store.MODELS_FILE).read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("pyarrow.parquet.write_table", boom)
    with pytest.raises(OSError):
        model_store.save(result, tmp_path / "models")
    assert (folder / model_store.MODELS_FILE).read_bytes() == before
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_no_rows_means_no_models_and_a_note(traces):
    result = fitting.fit_gpu(fitting.FitConfig(gpu="a100", trace_dirs=(traces,), include_embedded=False))
    assert result.models == [] and result.notes


def test_fit_config_validation(tmp_path):
    with pytest.raises(UnknownGPU):
        fitting.FitConfig(gpu="h900")
    with pytest.raises(ValueError):
        fitting.FitConfig(gpu="h100", min_rows=1)
    with pytest.raises(BadInput):
        fitting.FitConfig(gpu="h100", trace_dirs=(tmp_path / "missing",))


def test_load_without_models_raises_model_not_found(tmp_path):
    with pytest.raises(ModelNotFound):
        model_store.load("l4", tmp_path)


def test_a_truncated_op_samples_file_is_a_clean_error_naming_it(tmp_path):
    d = tmp_path / "traces"
    d.mkdir()
    (d / "op_samples-broken.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(BadInput, match="op_samples-broken.parquet"):
        _fit(d)


def test_fitting_one_family_keeps_the_others_in_the_folder(traces, tmp_path):
    out = tmp_path / "models"
    model_store.save(_fit(traces, families=("gemm", "all_reduce"), cross_source=False), out)
    model_store.save(_fit(traces, families=("all_reduce",), cross_source=False), out)
    stored = model_store.load("h100", out)
    assert sorted(s.family for s in stored) == ["all_reduce", "gemm"]
    evals = model_store.load_evals(out / "h100_sxm").to_pylist()
    assert {e["family"] for e in evals} == {"gemm", "all_reduce"}
    assert len({s.run_id for s in stored}) == 2          # gemm from the first fit, all_reduce refitted


def test_slice_choice_prefers_own_traces_then_vllm_kernels_and_groups_layer_labels(tmp_path):
    d = tmp_path / "traces"
    grid = {"m": [1, 64, 4096], "n": [1024, 4096], "k": [1024, 4096]}
    rows = []
    for ks in ("attn_pre_proj", "mlp_up_proj"):              # Vidur labels one GEMM by layer
        rows += synth.rows_for("gemm", grid, dtype="fp16", source="vidur", software="sarathi", kernel_source=ks)
    rows += synth.rows_for("gemm", grid, source="aiconfigurator", software="vllm 0.24.0",
                           kernel_source="torch.nn.functional.linear")
    rows += synth.rows_for("gemm", grid, source="aiconfigurator", software="vllm 0.30.0",
                           kernel_source="SomeOtherKernel")
    synth.write(rows, d / "op_samples-imports.parquet")
    con = samples.connect([d], include_embedded=False)
    slices = fitting.load_rows(con, "h100_sxm", "gemm")
    by_kernel = {s.key.kernel_source: len(s) for s in slices}
    assert by_kernel["linear (per layer)"] == 2 * 12          # both labels in one slice
    best = fitting.choose_slices(slices)["16-bit"]
    assert best.key.kernel_source == "torch.nn.functional.linear"   # preferred over a newer unknown kernel
    per_source = fitting.choose_slices(slices, by_source=True)
    assert per_source[("16-bit", "vidur")].key.kernel_source == "linear (per layer)"
    synth.write(synth.rows_for("gemm", grid, source="trace", software="vllm 0.11", kernel_source="sm90_gemm"),
                d / "op_samples-mine.parquet")
    slices = fitting.load_rows(samples.connect([d], include_embedded=False), "h100_sxm", "gemm")
    assert fitting.choose_slices(slices)["16-bit"].key.source == "trace"
