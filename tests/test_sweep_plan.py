"""Sweep files and their expansion into runs and command lines."""

from __future__ import annotations

import pytest

from revati.errors import BadInput
from revati.sweep.config import DEFAULT_COMMAND, load_sweep, sweep_from_dict
from revati.sweep.plan import RUN_DIR_MARK, TemplateError, expand, num_gpus, render_args


def _cfg(**over):
    data = {"name": "t", "gpus": ["h100", "a100"], "engine_command": "vllm serve /m --load-format dummy",
            "engine": {"max_num_seqs": [8, 16], "tensor_parallel_size": 2, "enforce_eager": True},
            "workload": {"request_rate": [1, 2.0, 4.5], "num_prompts": 10}}
    data.update(over)
    return sweep_from_dict(data)


def test_cartesian_product_and_default_command():
    cfg = _cfg()
    assert cfg.command == DEFAULT_COMMAND
    runs = expand(cfg)
    assert len(runs) == 2 * 2 * 3
    assert len({r.run_id for r in runs}) == 12
    r = runs[0]
    cmd = r.command("/tmp/run")
    assert cmd[:6] == ["revati", "emulate", "--gpu", "h100", "--result-dir", "/tmp/run"]
    i = cmd.index("--")
    assert cmd[i + 1:i + 6] == ["vllm", "serve", "/m", "--load-format", "dummy"]
    assert cmd[i + 6:] == ["--max-num-seqs", "8", "--tensor-parallel-size", "2", "--enforce-eager"]
    assert cmd[6:i] == ["--request-rate", "1", "--num-prompts", "10"]
    assert RUN_DIR_MARK in r.argv
    assert num_gpus(r.config) == 2


def test_run_ids_are_stable_and_rate_free_key_groups_curves():
    a, b = expand(_cfg()), expand(_cfg(workload={"num_prompts": 10, "request_rate": [1, 2, 4.5]}))
    assert [r.run_id for r in a] == [r.run_id for r in b]      # key order and 2 vs 2.0 do not matter
    keys = {r.config_key for r in a}
    assert len(keys) == 4                                       # 2 gpus x 2 max_num_seqs
    assert {r.request_rate for r in a} == {1.0, 2.0, 4.5}


def test_custom_template_quotes_values():
    cfg = _cfg(gpus=[], command="python -m x --name {label} --out {run_dir}/m.json", engine={},
               workload={"label": ["a b", "c;d"]})
    cmds = [r.command("/r") for r in expand(cfg)]
    assert cmds == [["python", "-m", "x", "--name", "a b", "--out", "/r/m.json"],
                    ["python", "-m", "x", "--name", "c;d", "--out", "/r/m.json"]]


@pytest.mark.parametrize("over, message", [
    ({"command": "run {nope}"}, "nope"),
    ({"workload": {"gpu": ["x"]}}, "reserved"),
])
def test_template_errors(over, message):
    with pytest.raises(TemplateError, match=message):
        expand(_cfg(**over))


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "bogus": 1}, "unknown key"),
    ({"name": "bad name"}, "letters"),
    ({"name": "x", "engine": {"a": []}}, "empty list"),
    ({"name": "x", "engine": {"a": 1}, "workload": {"a": 2}}, "both"),
    ({"name": "x"}, "list gpus"),                       # default command uses {gpu}
    ({"name": "x", "gpus": ["h100"], "slo_search": {"rate_low": 1}}, "ttft_ms"),
    ({"name": "x", "gpus": ["h100"], "slo_search": {"ttft_ms": 1, "rate_low": 5, "rate_high": 2}}, "rate_low"),
    ({"name": "x", "gpus": ["h100"], "jobs": 0}, "jobs"),
    ([1, 2], "mapping"),
])
def test_bad_sweep_files(data, message):
    with pytest.raises(BadInput, match=message):
        sweep_from_dict(data)


def test_load_sweep_file_errors(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        load_sweep(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(BadInput, match="YAML"):
        load_sweep(tmp_path / "bad.yaml")
    (tmp_path / "ok.yaml").write_text("gpus: h100\nworkload: {request_rate: [1, 2]}\n")
    cfg = load_sweep(tmp_path / "ok.yaml")
    assert cfg.name == "ok" and cfg.gpus == ("h100",)


def test_sweep_dir_defaults_under_revati_home(isolated_home):
    assert _cfg().sweep_dir == isolated_home / "traces" / "sweeps" / "t"


def test_render_args():
    assert render_args({"a_b": 1.5, "c": None, "d": False, "e": True, "f": float("inf")}) == \
        ["--a-b", "1.5", "--e", "--f", "inf"]


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89",
    bytes(range(256)) * 4,
])
def test_binary_sweep_file_is_bad_input(tmp_path, content):
    path = tmp_path / "sweep.png"
    path.write_bytes(content)
    with pytest.raises(BadInput, match="not a text file"):
        load_sweep(path)


def test_unknown_gpu_is_rejected_when_the_file_is_read():
    with pytest.raises(BadInput, match="unknown GPU 'h900'; known: .*h100_sxm"):
        _cfg(gpus=["h100", "h900"])
    assert _cfg(gpus=["H100", "a100-80gb"]).gpus == ("H100", "a100-80gb")   # aliases as the user wrote them


def test_port_is_filled_where_the_run_executes_with_a_free_port_per_run():
    import socket

    cfg = _cfg(command="revati emulate --serve-port {port} --result-dir {run_dir} {workload_args} "
                       "-- {engine_command} --port {port} {engine_args}")
    runs = expand(cfg)
    assert "{port}" in " ".join(runs[0].argv)           # not chosen at plan time
    ports = []
    for r in runs[:4]:
        cmd = r.command("/tmp/run")
        port = cmd[cmd.index("--serve-port") + 1]
        assert cmd[cmd.index("--port") + 1] == port      # one port per command
        ports.append(int(port))
    assert len(set(ports)) == 4                          # runs side by side never share one
    with socket.socket() as s:
        s.bind(("", ports[-1]))                          # and it was free


def test_port_is_a_reserved_name():
    with pytest.raises(TemplateError, match="reserved"):
        expand(_cfg(engine={"port": 8000}))
