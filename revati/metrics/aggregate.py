"""Aggregate serving metrics with ``vllm bench serve``'s names, units and definitions.

Matched against vLLM's ``vllm/benchmarks/serve.py`` (``calculate_metrics`` and the result dict
of ``benchmark``): keys ``duration`` (s), ``completed``, ``failed``, ``total_input_tokens``,
``total_output_tokens``, ``request_throughput`` (req/s), ``request_goodput`` (req/s, None
without SLOs), ``output_throughput`` and ``total_token_throughput`` (tok/s),
``max_output_tokens_per_s``, ``max_concurrent_requests``, and for each selected metric in
ttft/tpot/itl/e2el: ``mean_<m>_ms``, ``median_<m>_ms``, ``std_<m>_ms``, ``p<P>_<m>_ms``
(``P`` printed as an integer when whole: p99, p99.9).

Definitions kept as vLLM has them: statistics over successful requests only; numpy mean,
population std, median and linear-interpolated percentiles; an empty list counts as [0];
ITL pools every gap of every request; TPOT leaves out requests with one output token; goodput
counts a request good when every given SLO (ms) is >= its TTFT, TPOT (0 for one-token
requests) and E2EL, and divides by the duration.

revati's defaults differ on purpose: percentiles 50,90,95,99 for ttft,tpot,itl,e2el (vLLM's
defaults are 99 for ttft,tpot,itl); both are flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from revati.metrics.records import RequestRecord

METRICS = ("ttft", "tpot", "itl", "e2el")
GOODPUT_METRICS = ("ttft", "tpot", "e2el")
DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0)
DEFAULT_PERCENTILE_METRICS = METRICS


@dataclass(frozen=True)
class MetricsConfig:
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    percentile_metrics: tuple[str, ...] = DEFAULT_PERCENTILE_METRICS
    goodput_slos_ms: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        for p in self.percentiles:
            if not 0 <= p <= 100:
                raise ValueError(f"percentile must be in [0, 100], got {p}")
        bad = [m for m in self.percentile_metrics if m not in METRICS]
        if bad:
            raise ValueError(f"unknown metric(s) {', '.join(bad)}; known: {', '.join(METRICS)}")
        for name, value in self.goodput_slos_ms:
            if name not in GOODPUT_METRICS:
                raise ValueError(f"goodput SLO {name!r} unknown; allowed: {', '.join(GOODPUT_METRICS)}")
            if value < 0:
                raise ValueError(f"goodput SLO {name}:{value} must be >= 0 ms")


def parse_goodput(pairs: list[str] | tuple[str, ...] | None) -> tuple[tuple[str, float], ...]:
    """``["ttft:500", "tpot:50"]`` -> ``(("ttft", 500.0), ("tpot", 50.0))`` (milliseconds)."""
    out = []
    for pair in pairs or ():
        name, sep, value = pair.partition(":")
        try:
            if not sep:
                raise ValueError
            out.append((name.strip(), float(value)))
        except ValueError:
            raise ValueError(f"goodput SLO {pair!r} is not KEY:MILLISECONDS (e.g. ttft:500)") from None
    cfg = MetricsConfig(goodput_slos_ms=tuple(out))  # validates names and values
    return cfg.goodput_slos_ms


def percentile_key(p: float) -> str:
    return str(int(p)) if int(p) == p else str(p)


def _stats(values_s: list[float], percentiles: tuple[float, ...]) -> dict[str, float]:
    arr = np.asarray(values_s or [0.0], dtype=np.float64) * 1000.0
    out = {"mean": float(np.mean(arr)), "median": float(np.median(arr)), "std": float(np.std(arr))}
    for p in percentiles:
        out[f"p{percentile_key(p)}"] = float(np.percentile(arr, p))
    return out


def _peaks(ok: list[RequestRecord]) -> tuple[float, int]:
    """Peak output tokens in any whole second from the first send, and peak concurrency
    (half-open [send, last chunk) intervals, departures before arrivals at equal times)."""
    if not ok:
        return 0.0, 0
    t0 = min(r.send_s for r in ok)
    t_end = max(r.token_times_s[-1] for r in ok)
    buckets = np.zeros(int(math.ceil(t_end - t0)) + 1)
    for r in ok:
        for t in r.token_times_s:
            b = int(t - t0)
            if 0 <= b < len(buckets):
                buckets[b] += 1
    events = sorted([(r.send_s, 1) for r in ok] + [(r.token_times_s[-1], -1) for r in ok])
    cur = peak = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return float(buckets.max()), peak


def compute_metrics(records: list[RequestRecord], duration_s: float, cfg: MetricsConfig | None = None) -> dict:
    """The aggregate metrics dict (vLLM's keys, see the module docstring)."""
    cfg = cfg or MetricsConfig()
    if not duration_s > 0:
        raise ValueError(f"duration must be > 0 s, got {duration_s}")
    ok = [r for r in records if r.success and r.token_times_s]
    ttfts = [r.ttft_s for r in ok]
    e2els = [r.e2el_s for r in ok]
    tpots = [r.tpot_s for r in ok if r.tpot_s is not None]
    all_tpots = [r.tpot_s if r.tpot_s is not None else 0.0 for r in ok]
    itls = [x for r in ok for x in r.itls_s]
    total_in = sum(r.prompt_tokens for r in ok)
    total_out = sum(r.output_tokens for r in ok)

    good = None
    if cfg.goodput_slos_ms:
        per_metric = {"ttft": ttfts, "tpot": all_tpots, "e2el": e2els}
        n_good = 0
        for i in range(len(ok)):
            if all(slo_ms / 1000.0 >= per_metric[name][i] for name, slo_ms in cfg.goodput_slos_ms):
                n_good += 1
        good = n_good / duration_s

    peak_tok_s, peak_conc = _peaks(ok)
    result: dict = {
        "duration": duration_s,
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / duration_s,
        "request_goodput": good,
        "output_throughput": total_out / duration_s,
        "total_token_throughput": (total_in + total_out) / duration_s,
        "max_output_tokens_per_s": peak_tok_s,
        "max_concurrent_requests": peak_conc,
    }
    values = {"ttft": ttfts, "tpot": tpots, "itl": itls, "e2el": e2els}
    for metric in cfg.percentile_metrics:
        for stat, v in _stats(values[metric], cfg.percentiles).items():
            result[f"{stat}_{metric}_ms"] = v
    return result
