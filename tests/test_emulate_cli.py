from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAMS = Path(__file__).parent / "programs"


def _revati(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "revati", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=PROGRAMS)


def test_forked_and_spawned_children_are_shimmed():
    proc = _revati("emulate", "--gpu", "a100", "--", sys.executable, "children.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    name = "NVIDIA A100-SXM4-80GB"
    assert out["parent"] == name
    for method in ("fork", "spawn"):
        assert out[method] == {"pid": out[method]["pid"], "cuda": True, "type": "VTensor", "name": name}
    assert "emulated process(es)" in proc.stderr


def test_program_exception_propagates_with_its_own_traceback():
    proc = _revati("emulate", "-q", "--", sys.executable, "children.py", "fail")
    assert proc.returncode == 1
    assert "ValueError: boom from the program" in proc.stderr
    assert 'children.py", line' in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["emulate", "--gpu", "h900", "--", "true"], "unknown GPU 'h900'; known:"),
    (["emulate", "--request-rate", "-1"], "request-rate"),
    (["emulate", "--num-gpus", "0", "--", "true"], "num-gpus"),
    (["emulate", "--client", "true", "--", "true"], "--client needs --serve-port"),
    (["emulate", "--serve-port", "8000", "--num-prompts", "3", "--client", "true", "--", "true"],
     "--num-prompts: with --client the workload is the client's own"),
    (["emulate", "--serve-port", "8000", "--client", "no-such-client --x", "--", "true"],
     "--client: no-such-client: command not found"),
])
def test_bad_input_is_a_one_line_error(args, message):
    proc = _revati(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_explain_shows_the_injected_setup():
    proc = _revati("emulate", "--explain", "--gpu", "l4", "--", "python", "x.py")
    assert proc.returncode == 0
    out = json.loads(proc.stdout)
    env = out["environment"]
    assert json.loads(env["REVATI_INJECT"])["gpu"] == "l4"
    assert env["PYTHONPATH"].split(":")[0].endswith("inject")
    # what an activated interpreter patched, by installer (Note [Patch registry])
    patched = {name for names in out["patches"].values() for name in names}
    assert {"time.monotonic", "time.sleep", "torch.cuda.synchronize"} <= patched, sorted(patched)[:30]
    assert "vllm" in out["import_hooks"] and "zmq" in out["import_hooks"]


@pytest.mark.hf
@pytest.mark.slow
def test_main_job_serves_a_workload_and_writes_vllm_metrics(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "res"
    proc = _revati("emulate", "--gpu", "h100", "--model", "tiny-llama", "--num-prompts", "6", "--request-rate", "2",
                   "--random-input-len", "32", "--random-output-len", "8", "--result-dir", str(out), "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["completed"] == 6 and metrics["total_output_tokens"] == 6 * 8
    assert metrics["gpu"] == "h100_sxm" and metrics["virtual_duration_s"] > 0
    assert metrics["wall_breakdown"]["processes"] == 1 and metrics["wall_breakdown"]["framework_cpu_s"] > 0
    for key in ("mean_ttft_ms", "p99_tpot_ms", "median_itl_ms", "mean_e2el_ms", "request_throughput"):
        assert metrics[key] > 0, key
    lines = (out / "requests.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(x)["output_tokens"] == 8 for x in lines)


def test_timeline_export_has_kernels_on_stream_tracks_and_host_syncs(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(
        "import torch\n"
        "a = torch.empty(1024, 1024, device='cuda', dtype=torch.float16)\n"
        "s = torch.cuda.Stream()\n"
        "with torch.cuda.stream(s):\n"
        "    b = a @ a\n"
        "c = a @ a\n"
        "torch.cuda.synchronize()\n")
    # no per-kernel host charge: with one (8 us) these 4 us GEMMs leave the host behind, and the
    # synchronisation has nothing to wait for
    proc = _revati("emulate", "--no-host-cpu", "--launch-overhead-us", "0", "--timeline", str(tmp_path / "tl"), "--",
                   sys.executable, str(prog))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (trace_file,) = (tmp_path / "tl").glob("timeline-*.json")
    events = json.loads(trace_file.read_text())["traceEvents"]
    kernels = [e for e in events if e.get("cat") == "kernel" and e["name"] == "gemm"]
    assert len({e["tid"] for e in kernels}) == 2  # default stream and the side stream
    assert all(e["dur"] > 0 for e in kernels)
    syncs = [e for e in events if e.get("cat") == "sync" and e["name"] == "device synchronize"]
    assert syncs and syncs[-1]["ts"] + syncs[-1]["dur"] >= max(e["ts"] + e["dur"] for e in kernels) - 1e-3
    # the run's processes joined in one trace (one process here: the same events)
    assert json.loads((tmp_path / "tl" / "timeline.json").read_text())["traceEvents"] == events


# -- bad input: one line, non-zero, nothing started (issue 15, item 4) ---------------------------

def _one_line_error(proc, *needles: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def not_executable(tmp_path):
    path = tmp_path / "script.sh"
    path.write_text("#!/bin/sh\necho hi\n")
    path.chmod(0o644)
    return path


@pytest.mark.parametrize("args, needles", [
    (["--", "/no/such/cmd"], ["/no/such/cmd", "command not found"]),
    (["--", "no-such-program-revati-test"], ["no-such-program-revati-test", "command not found"]),
    (["--", "NOT_EXECUTABLE"], ["script.sh", "not executable"]),
    (["--", "FOLDER"], ["is a folder"]),
    (["--request-rat", "4", "--", "true"], ["--request-rat", "did you mean --request-rate?"]),
    (["--model", "no-such-model"], ["no-such-model", "llama-2-70b", "qwen2.5-7b", "mistral-7b", "tiny-llama"]),
    (["--model", "FOLDER"], ["config.json"]),
    (["--dataset-name", "mooncake", "--dataset-path", "/no/such.jsonl"], ["/no/such.jsonl", "no such file"]),
    (["--dataset-name", "azure", "--dataset-path", "/no/such.parquet"], ["/no/such.parquet", "azure_conv_2023"]),
    (["--dataset-path", "/no/such.jsonl"], ["takes no dataset_path"]),
    (["--serve-port", "8000", "--dataset-name", "mooncake", "--dataset-path", "/no/such.jsonl", "--", "true"],
     ["/no/such.jsonl", "no such file"]),
])
def test_bad_command_model_or_dataset_is_one_line(args, needles, not_executable, tmp_path):
    args = [str(not_executable) if a == "NOT_EXECUTABLE" else str(tmp_path) if a == "FOLDER" else a for a in args]
    proc = _revati("emulate", *args, timeout=60)
    _one_line_error(proc, *needles)


@pytest.mark.hf
def test_every_shipped_model_name_resolves_without_the_hub():
    """README's names are built-in shapes or weightless directories (never a Hub download)."""
    pytest.importorskip("transformers")
    from transformers import AutoConfig

    from revati import models_zoo
    from revati.drivers import hf_cb

    readme = {"llama-2-7b", "llama-2-70b", "llama-3-8b", "qwen2.5-7b", "mistral-7b", "tiny-llama"}
    assert readme <= set(hf_cb.known_models()) and set(models_zoo.names()) <= set(hf_cb.known_models())
    for name in sorted(readme):
        source = hf_cb.model_source(name)
        if isinstance(source, str):
            cfg = AutoConfig.from_pretrained(source)     # offline: a local directory
            assert cfg.hidden_size == models_zoo.config(name)["hidden_size"]
        else:
            assert source["hidden_size"] > 0


@pytest.mark.hf
@pytest.mark.slow
def test_main_job_runs_a_shipped_model_that_has_no_built_in_shape(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "res"
    proc = _revati("emulate", "--model", "qwen2.5-7b", "--num-prompts", "1", "--random-input-len", "16",
                   "--random-output-len", "2", "--result-dir", str(out), "-q", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["completed"] == 1 and metrics["model"] == "qwen2.5-7b"


@pytest.mark.hf
def test_virtual_oom_in_the_main_job_is_one_line():
    """A 70B model in 16-bit does not fit in an A100's 80 GB: one line naming the GPU, what the
    model asked for and what was free (the weights fail fast: a few seconds)."""
    pytest.importorskip("transformers")
    proc = _revati("emulate", "--gpu", "a100", "--model", "llama-2-70b", "--num-prompts", "1", timeout=120)
    line = _one_line_error(proc, "out of memory", "a100_sxm_80gb", "asked for", "free")
    assert proc.returncode == 1 and line.startswith("revati: ")
