"""Length distributions and workload building."""

from __future__ import annotations

import math

import numpy as np
import pytest

from revati.workload import WorkloadConfig, build_workload
from revati.workload.lengths import (SHAREGPT_LIKE, EmpiricalLengths, FixedLengths, UniformLengths,
                                     azure_lengths, uniform_around)


def test_fixed_and_uniform():
    rng = np.random.default_rng(0)
    i, o = FixedLengths(7, 3).sample(4, rng)
    assert i.tolist() == [7] * 4 and o.tolist() == [3] * 4
    i, o = UniformLengths(10, 20, 1, 2).sample(20_000, rng)
    assert i.min() == 10 and i.max() == 20 and set(o.tolist()) == {1, 2}
    assert i.mean() == pytest.approx(15, abs=0.1)


def test_uniform_around_matches_vllm_range_ratio():
    d = uniform_around(100, 50, 0.2)
    assert (d.input_low, d.input_high, d.output_low, d.output_high) == (80, 120, 40, 60)
    assert isinstance(uniform_around(100, 50, 0.0), FixedLengths)
    with pytest.raises(ValueError):
        uniform_around(100, 50, 1.0)


def test_sharegpt_like_respects_vllm_pruning_and_is_seeded():
    i, o = SHAREGPT_LIKE.sample(5000, np.random.default_rng(1))
    assert len(i) == len(o) == 5000
    assert i.min() >= 4 and o.min() >= 4 and i.max() <= 1024 and (i + o).max() <= 2048
    # truncation only removes the long tail: kept means are below the published means, same order
    assert 80 < i.mean() < 161.31 and 200 < o.mean() < 337.99
    i2, o2 = SHAREGPT_LIKE.sample(5000, np.random.default_rng(1))
    assert np.array_equal(i, i2) and np.array_equal(o, o2)


def test_empirical_resamples_real_pairs():
    d = EmpiricalLengths((5, 6), (0, 9))
    i, o = d.sample(1000, np.random.default_rng(0))
    assert set(zip(i.tolist(), o.tolist())) == {(5, 1), (6, 9)}   # 0 output tokens -> 1
    az = azure_lengths("code")
    assert len(az.input_tokens) == 8819


def test_build_random_workload_is_deterministic_and_rate_keeps_lengths():
    a = build_workload(WorkloadConfig(num_prompts=50, request_rate=5, random_input_len=100,
                                      random_output_len=20, random_range_ratio=0.5, seed=3))
    b = build_workload(WorkloadConfig(num_prompts=50, request_rate=5, random_input_len=100,
                                      random_output_len=20, random_range_ratio=0.5, seed=3))
    c = build_workload(WorkloadConfig(num_prompts=50, request_rate=9, random_input_len=100,
                                      random_output_len=20, random_range_ratio=0.5, seed=3))
    assert a == b
    assert [r.prompt_tokens for r in a] == [r.prompt_tokens for r in c]
    assert a[-1].arrival_s == pytest.approx(50 / 5)
    assert all(50 <= r.prompt_tokens <= 150 for r in a)


def test_azure_replay_and_resampling():
    replay = build_workload(WorkloadConfig(dataset_name="azure", num_prompts=3))
    assert [r.prompt_tokens for r in replay] == [374, 396, 879]
    fast = build_workload(WorkloadConfig(dataset_name="azure", num_prompts=3, trace_time_scale=2.0))
    assert fast[1].arrival_s == pytest.approx(replay[1].arrival_s / 2)
    synth = build_workload(WorkloadConfig(dataset_name="azure", num_prompts=100, request_rate=2.0))
    assert synth[-1].arrival_s == pytest.approx(50.0)


@pytest.mark.parametrize("kwargs", [
    dict(dataset_name="nope"), dict(dataset_name="mooncake"), dict(dataset_name="random", dataset_path="x"),
    dict(num_prompts=0), dict(request_rate=0), dict(max_concurrency=0), dict(random_range_ratio=1.5),
    dict(request_rate=math.nan),
])
def test_workload_config_rejects(kwargs):
    with pytest.raises(ValueError):
        WorkloadConfig(**kwargs)
