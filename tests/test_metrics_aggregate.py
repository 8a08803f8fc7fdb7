"""Aggregate metrics against hand-computed examples (values worked out in the comments)."""

from __future__ import annotations

import pytest

from revati.metrics.aggregate import MetricsConfig, compute_metrics, parse_goodput, percentile_key
from revati.metrics.records import RequestRecord


def _records():
    return [
        # TTFT 0.1, ITL [0.2, 0.3], E2EL 0.6, TPOT (0.6 - 0.1) / 2 = 0.25
        RequestRecord(0, 0.0, send_s=0.0, token_times_s=[0.1, 0.3, 0.6], prompt_tokens=10, output_tokens=3, success=True),
        # one token: TTFT = E2EL = 0.5, no ITL, left out of TPOT (counts 0 for goodput)
        RequestRecord(1, 1.0, send_s=1.0, token_times_s=[1.5], prompt_tokens=20, output_tokens=1, success=True),
        # TTFT 0.2, ITL [0.1, 0.1, 0.1], E2EL 0.5, TPOT 0.3 / 3 = 0.1
        RequestRecord(2, 2.0, send_s=2.0, token_times_s=[2.2, 2.3, 2.4, 2.5], prompt_tokens=30, output_tokens=4, success=True),
        RequestRecord(3, 3.0, send_s=3.0, prompt_tokens=40, error="HTTP 500", success=False),
    ]


def test_hand_computed_example():
    m = compute_metrics(_records(), duration_s=10.0)
    assert m["completed"] == 3 and m["failed"] == 1
    assert m["total_input_tokens"] == 60 and m["total_output_tokens"] == 8
    assert m["request_throughput"] == pytest.approx(0.3)
    assert m["output_throughput"] == pytest.approx(0.8)
    assert m["total_token_throughput"] == pytest.approx(6.8)
    assert m["request_goodput"] is None
    # TTFT ms [100, 500, 200]: sorted [100, 200, 500]
    assert m["mean_ttft_ms"] == pytest.approx(800 / 3)
    assert m["median_ttft_ms"] == pytest.approx(200)
    assert m["std_ttft_ms"] == pytest.approx((260000 / 9) ** 0.5)   # population std: sum of squares 260000/3, over 3
    assert m["p50_ttft_ms"] == pytest.approx(200)
    assert m["p90_ttft_ms"] == pytest.approx(440)        # rank 1.8: 200 + 0.8 * 300
    assert m["p99_ttft_ms"] == pytest.approx(494)
    # TPOT ms [250, 100]
    assert m["mean_tpot_ms"] == pytest.approx(175)
    assert m["p90_tpot_ms"] == pytest.approx(235)        # rank 0.9: 100 + 0.9 * 150
    # ITL ms pooled [200, 300, 100, 100, 100]
    assert m["mean_itl_ms"] == pytest.approx(160)
    assert m["median_itl_ms"] == pytest.approx(100)
    assert m["p90_itl_ms"] == pytest.approx(260)         # rank 3.6: 200 + 0.6 * 100
    # E2EL ms [600, 500, 500]
    assert m["mean_e2el_ms"] == pytest.approx(1600 / 3)
    assert m["p99_e2el_ms"] == pytest.approx(598)
    assert m["p95_e2el_ms"] == pytest.approx(590)
    # peaks: 4 tokens in second [2, 3); intervals never overlap
    assert m["max_output_tokens_per_s"] == 4 and m["max_concurrent_requests"] == 1


@pytest.mark.parametrize("slos, good", [
    (["ttft:300", "tpot:200"], 1),      # R0 misses TPOT (250), R1 misses TTFT (500), R2 meets both
    (["e2el:550"], 2),                  # R0 600 misses
    (["tpot:0"], 1),                    # only the one-token request, whose TPOT counts as 0
    (["ttft:500", "tpot:250", "e2el:600"], 3),   # SLO >= value is good: boundaries count
])
def test_goodput_semantics(slos, good):
    m = compute_metrics(_records(), 10.0, MetricsConfig(goodput_slos_ms=parse_goodput(slos)))
    assert m["request_goodput"] == pytest.approx(good / 10.0)


def test_keys_match_vllm_bench_serve():
    cfg = MetricsConfig(percentiles=(99.0, 99.9), percentile_metrics=("ttft", "tpot", "itl", "e2el"))
    m = compute_metrics(_records(), 10.0, cfg)
    expected = {"duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
                "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
                "max_output_tokens_per_s", "max_concurrent_requests"}
    for metric in ("ttft", "tpot", "itl", "e2el"):
        expected |= {f"mean_{metric}_ms", f"median_{metric}_ms", f"std_{metric}_ms",
                     f"p99_{metric}_ms", f"p99.9_{metric}_ms"}
    assert set(m) == expected
    assert percentile_key(50.0) == "50" and percentile_key(99.9) == "99.9"


def test_no_success_gives_zeros_like_vllm():
    m = compute_metrics([RequestRecord(0, 0.0, error="x")], 2.0)
    assert m["completed"] == 0 and m["failed"] == 1
    assert m["mean_ttft_ms"] == 0.0 and m["p99_itl_ms"] == 0.0 and m["max_concurrent_requests"] == 0


def test_percentile_metric_selection():
    m = compute_metrics(_records(), 10.0, MetricsConfig(percentiles=(50.0,), percentile_metrics=("e2el",)))
    assert "mean_ttft_ms" not in m and "p50_e2el_ms" in m


@pytest.mark.parametrize("bad", [["ttft"], ["ttft:x"], ["queue:5"], ["ttft:-1"]])
def test_parse_goodput_rejects(bad):
    with pytest.raises(ValueError):
        parse_goodput(bad)


def test_config_and_duration_validation():
    with pytest.raises(ValueError):
        MetricsConfig(percentiles=(101.0,))
    with pytest.raises(ValueError):
        MetricsConfig(percentile_metrics=("foo",))
    with pytest.raises(ValueError):
        compute_metrics(_records(), 0.0)
