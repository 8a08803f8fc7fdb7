"""EmulationConfig read back from JSON (REVATI_INJECT): what to_json wrote comes back equal, and
any other key is an error that names it (a misspelt key must not silently become a default)."""

from __future__ import annotations

import pytest

from revati.errors import BadInput, UnknownKeys
from revati.shim.config import EmulationConfig


def test_from_json_reads_back_what_to_json_wrote():
    cfg = EmulationConfig(gpu="a100", num_gpus=2, host_speed=1.5, eos_token_ids=[2], kernel_stack="vllm")
    assert EmulationConfig.from_json(cfg.to_json()) == cfg


def test_the_injection_envelope_is_not_an_unknown_key():
    """revati/inject.py adds "mode" beside the config; revati/_bootstrap.py passes it all on."""
    cfg = EmulationConfig(gpu="l4")
    assert EmulationConfig.from_json({"mode": "emulate", **cfg.to_json()}) == cfg


def test_from_json_names_every_unknown_key():
    with pytest.raises(UnknownKeys) as info:
        EmulationConfig.from_json({"gpu": "h100", "num_gpu": 2, "launch_overhead": 8000})
    err = info.value
    assert err.keys == ["launch_overhead", "num_gpu"]
    assert "num_gpus" in err.known and "mode" not in err.known
    assert isinstance(err, BadInput) and err.path == "EmulationConfig"
    assert "'num_gpu'" in str(err) and "'launch_overhead'" in str(err) and "\n" not in str(err)
