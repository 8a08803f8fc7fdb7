"""The workload flags have one declaration (revati.workload.options): ``revati bench serve``,
``revati emulate`` and the main job's driver take them with the same names and the declared
defaults, refuse the same values, and hand them to a subprocess without loss."""

from __future__ import annotations

import argparse
import json
import math

import click
import pytest
from click.testing import CliRunner

from revati.workload.flags import flag_fields, flag_names
from revati.workload.options import (MAIN_JOB_DEFAULTS, WorkloadOptions, add_argparse_arguments, click_options,
                                     from_values, main_job_options, to_argv)

FIELDS = flag_fields(WorkloadOptions)

# Every value differs from its default (checked below), so a flag the trip loses fails the test.
NON_DEFAULT = WorkloadOptions(
    dataset_name="sharegpt", dataset_path="chats.json", num_prompts=7, request_rate=2.5, burstiness=0.5,
    max_concurrency=3, random_input_len=100, random_output_len=9, random_range_ratio=0.25, trace_time_scale=1.5,
    seed=11, sharegpt_output_len=33, custom_output_len=17, goodput=("ttft:500", "tpot:50"))

# The flags users, sweeps and scripts already pass: renaming one must fail here, not in their runs.
EXISTING_FLAGS = {
    "--dataset-name", "--dataset-path", "--sharegpt-output-len", "--custom-output-len", "--num-prompts",
    "--random-input-len", "--input-len", "--random-output-len", "--output-len", "--random-range-ratio",
    "--request-rate", "--burstiness", "--max-concurrency", "--trace-time-scale", "--seed", "--goodput"}


def _bench_serve() -> click.Command:
    from revati.cli.bench import bench

    return bench.commands["serve"]


def _emulate() -> click.Command:
    from revati.cli.emulate import emulate

    return emulate


# (command, the defaults it must show): bench serve keeps vllm's, emulate the main job's
CLICK_COMMANDS = [(_bench_serve, {}), (_emulate, MAIN_JOB_DEFAULTS)]
CLICK_IDS = ["bench serve", "emulate"]


def _hf_cb():
    from revati.drivers import hf_cb

    return hf_cb


def _click_parse(command: click.Command, argv: list[str]) -> WorkloadOptions:
    return from_values(command.make_context(command.name, list(argv)).params)


def test_the_sample_sets_every_flag_away_from_its_default():
    assert [f.name for f in FIELDS if getattr(NON_DEFAULT, f.name) == f.default] == []
    assert [f.name for f in FIELDS if getattr(NON_DEFAULT, f.name) == MAIN_JOB_DEFAULTS.get(f.name)] == []


@pytest.mark.parametrize("command, defaults", CLICK_COMMANDS, ids=CLICK_IDS)
def test_click_commands_have_every_flag_with_its_declared_default(command, defaults):
    params = {p.name: p for p in command().params if isinstance(p, click.Option)}
    for f in FIELDS:
        param = params[f.name]
        assert tuple(param.opts) == flag_names(f), f.name
        default = tuple(param.default) if param.multiple else param.default
        assert default == defaults.get(f.name, f.default), f.name
        assert f.metadata["help"] in param.help, f.name
    assert EXISTING_FLAGS <= {opt for p in params.values() for opt in p.opts}


def test_the_drivers_argparse_flags_are_the_same():
    actions = {a.dest: a for a in _hf_cb().build_parser()._actions}
    for f in FIELDS:
        assert tuple(actions[f.name].option_strings) == flag_names(f), f.name
        default = actions[f.name].default
        default = tuple(default) if isinstance(default, list) else default   # argparse extends a list
        assert default == MAIN_JOB_DEFAULTS.get(f.name, f.default), f.name


def test_the_driver_alone_and_revati_emulate_serve_the_same_workload():
    """`python -m revati.drivers.hf_cb` and `revati emulate` with no flags: the main job."""
    main_job = main_job_options()
    assert (main_job.num_prompts, main_job.random_input_len) == (16, 256)   # small on purpose
    assert from_values(vars(_hf_cb().parse_args([]))) == main_job
    assert _click_parse(_emulate(), []) == main_job
    assert _click_parse(_bench_serve(), []) == WorkloadOptions()            # vllm bench serve's


@pytest.mark.parametrize("options", [NON_DEFAULT, WorkloadOptions(), main_job_options()],
                         ids=["non-default", "bench defaults", "main-job defaults"])
def test_options_survive_argv_and_every_parser(options):
    argv = to_argv(options)
    parser = argparse.ArgumentParser()
    add_argparse_arguments(parser)
    assert from_values(vars(parser.parse_args(argv))) == options
    assert from_values(vars(_hf_cb().parse_args(argv))) == options
    for command, _ in CLICK_COMMANDS:
        assert _click_parse(command(), argv) == options


def test_goodput_as_vllm_writes_it_and_as_to_argv_writes_it():
    hf_cb = _hf_cb()
    assert hf_cb.parse_args(["--goodput", "ttft:5", "tpot:6"]).goodput == ["ttft:5", "tpot:6"]
    assert hf_cb.parse_args(["--goodput", "ttft:5", "--goodput", "tpot:6"]).goodput == ["ttft:5", "tpot:6"]


@pytest.mark.parametrize("flag, value", [
    ("--num-prompts", "0"), ("--request-rate", "0"), ("--burstiness", "-1"), ("--max-concurrency", "0"),
    ("--random-input-len", "0"), ("--random-range-ratio", "1"), ("--trace-time-scale", "0"),
    ("--sharegpt-output-len", "0"), ("--dataset-name", "nope"), ("--num-prompts", "many"),
])
def test_every_parser_refuses_the_same_values(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _hf_cb().parse_args([flag, value])
    assert exit_info.value.code == 2 and flag in capsys.readouterr().err
    for command, _ in CLICK_COMMANDS:
        with pytest.raises(click.BadParameter) as bad:
            command().make_context(command().name, [flag, value])
        assert flag in bad.value.format_message()


@pytest.mark.parametrize("kwargs", [dict(request_rate=math.nan), dict(goodput=("queue:3",)), dict(goodput=("ttft",)),
                                    dict(dataset_name="custom"), dict(dataset_path="x.json")])
def test_the_dataclass_refuses_what_no_range_catches(kwargs):
    with pytest.raises(ValueError):
        WorkloadOptions(**kwargs)


def test_the_drivers_bad_workload_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _hf_cb().parse_args(["--goodput", "queue:3"])
    assert exit_info.value.code == 2 and "queue" in capsys.readouterr().err


def test_an_override_of_no_flag_is_refused():
    with pytest.raises(TypeError, match="num_prompt"):
        click_options(defaults={"num_prompt": 5})
    with pytest.raises(TypeError, match="num_prompt"):
        add_argparse_arguments(argparse.ArgumentParser(), defaults={"num_prompt": 5})


def test_emulate_hands_its_workload_flags_to_the_main_jobs_driver():
    from revati.cli import cli

    res = CliRunner().invoke(cli, ["emulate", "--explain", "--num-prompts", "5", "--input-len", "40",
                                   "--goodput", "ttft:9", "--goodput", "tpot:3"])
    assert res.exit_code == 0, res.output
    command = json.loads(res.stdout)["command"]
    assert command[1:3] == ["-m", "revati.drivers.hf_cb"]
    expected = WorkloadOptions(**{**MAIN_JOB_DEFAULTS, "num_prompts": 5, "random_input_len": 40,
                                  "goodput": ("ttft:9", "tpot:3")})
    assert from_values(vars(_hf_cb().parse_args(command[3:]))) == expected


def test_the_selftest_takes_the_shared_workload_flags(tmp_path, capsys):
    from revati.bench import selftest

    options = WorkloadOptions(num_prompts=7, request_rate=3.0, random_input_len=64, random_output_len=5,
                              seed=4, goodput=("ttft:100",))
    assert selftest.main(["--result-dir", str(tmp_path), *to_argv(options)]) == 0
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["workload"] == options.workload().to_json() and result["completed"] == 7
    assert "request_goodput" in result   # the SLO reached the metrics
    # a flag the model cannot honour is refused, not ignored
    assert selftest.main(["--result-dir", str(tmp_path / "b"), "--max-concurrency", "2"]) == 2
    assert "--max-concurrency" in capsys.readouterr().err
