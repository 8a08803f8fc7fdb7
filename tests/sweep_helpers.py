"""Sweep files whose runs are real processes: revati.bench.selftest computing metrics."""

from __future__ import annotations

import shlex
import sys

import yaml

SELFTEST = f"{shlex.quote(sys.executable)} -m revati.bench.selftest --gpu {{gpu}} --result-dir {{run_dir}} {{engine_args}} {{workload_args}}"


def write_sweep(path, out_dir, **over) -> str:
    data = {
        "name": "t",
        "gpus": ["h100"],
        "command": SELFTEST,
        "engine": {"max_num_seqs": [16, 64]},
        "workload": {"request_rate": [4, 16], "num_prompts": 40, "random_input_len": 256, "random_output_len": 32},
    }
    if out_dir is not None:
        data["output_dir"] = str(out_dir)
    data.update(over)
    path.write_text(yaml.safe_dump(data))
    return str(path)
