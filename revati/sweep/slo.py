"""SLO search: per configuration, the highest request rate whose tail latency meets targets.

Method (each probe is an ordinary sweep run at one rate, so probes are resumable and a grid
run at the same rate is reused):

1. probe ``rate_low`` and ``rate_high``. If ``rate_high`` meets the targets the answer is
   ``rate_high`` (flagged: the true limit may be higher); if ``rate_low`` misses, there is no
   answer in range (``max_rate`` is null).
2. otherwise bisect ``iterations`` times at the geometric mid-point sqrt(lo * hi) -- rates span
   orders of magnitude, so halving the ratio is the useful step -- rounded to 4 significant
   digits; the answer is the highest probed rate that met the targets, and the bracket
   ``[lo, hi]`` says how close it is.

Assumptions: p<percentile> TTFT and TPOT do not decrease as the rate grows (beyond noise) -- the
bisection is only as right as that monotonicity; a probe whose run failed counts as missing the
targets; the workload's other parameters (prompt count, lengths, seed) stay fixed, so every
probe sends the same requests, only at a different rate. One round probes every configuration
at once, so the rounds use the executor's parallelism.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from revati.errors import BadInput
from revati.metrics.aggregate import percentile_key
from revati.metrics.result import METRICS_FILE, read_result
from revati.sweep.config import SLOSearchConfig, SweepConfig
from revati.sweep.plan import RunSpec, make_run
from revati.sweep.runner import is_done, run_dir_of


def round_rate(rate: float) -> float:
    return float(f"{rate:.4g}")


def meets_slo(metrics: dict | None, slo: SLOSearchConfig) -> bool:
    if metrics is None:
        return False
    p = percentile_key(slo.percentile)
    for name, target in (("ttft", slo.ttft_ms), ("tpot", slo.tpot_ms)):
        if target is None:
            continue
        value = metrics.get(f"p{p}_{name}_ms")
        if not isinstance(value, (int, float)) or value > target:
            return False
    return metrics.get("completed", 0) > 0


@dataclass
class CurveSearch:
    base: RunSpec                      # any run of the configuration; its rate is replaced
    lo: float | None = None            # highest rate known to meet the targets
    hi: float | None = None            # lowest rate known to miss them
    probes: list[dict] = field(default_factory=list)
    done: bool = False

    def result(self, slo: SLOSearchConfig) -> dict:
        return {
            "config_key": self.base.config_key,
            "gpu": self.base.config["gpu"],
            "engine": self.base.config["engine"],
            "workload": {k: v for k, v in self.base.config["workload"].items() if k != "request_rate"},
            "max_rate": self.lo,
            "bracket": [self.lo, self.hi],
            "at_upper_bound": self.lo is not None and self.lo >= slo.rate_high,
            # the targets themselves, so a report can say what "meeting the SLOs" meant
            "slo": {"percentile": slo.percentile, "ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms},
            "probes": sorted(self.probes, key=lambda p: p["request_rate"]),
        }


def _probe_spec(cfg: SweepConfig, base: RunSpec, rate: float) -> RunSpec:
    workload = dict(base.config["workload"], request_rate=rate)
    return make_run(cfg, base.config["gpu"], dict(base.config["engine"]), workload)


def _metrics_of(sweep_dir: Path, spec: RunSpec) -> dict | None:
    run_dir = run_dir_of(sweep_dir, spec.run_id)
    if not is_done(run_dir):
        return None
    try:
        return read_result(run_dir / METRICS_FILE)
    except BadInput:
        return None


def search(
    cfg: SweepConfig,
    grid: list[RunSpec],
    sweep_dir: Path,
    execute: Callable[[list[RunSpec]], None],
) -> tuple[list[dict], list[RunSpec]]:
    """Run the search; return one result per configuration and every probe run."""
    slo = cfg.slo_search
    if slo is None:
        raise ValueError("the sweep has no slo_search section")
    curves: dict[str, CurveSearch] = {}
    for spec in grid:
        curves.setdefault(spec.config_key, CurveSearch(spec))
    all_probes: dict[str, RunSpec] = {}

    def probe_round(rates: dict[str, float]) -> dict[str, bool]:
        specs = {key: _probe_spec(cfg, curves[key].base, rate) for key, rate in rates.items()}
        all_probes.update({s.run_id: s for s in specs.values()})
        execute(list({s.run_id: s for s in specs.values()}.values()))
        verdicts = {}
        for key, spec in specs.items():
            metrics = _metrics_of(sweep_dir, spec)
            ok = meets_slo(metrics, slo)
            p = percentile_key(slo.percentile)
            curves[key].probes.append({
                "request_rate": rates[key], "run_id": spec.run_id, "meets": ok,
                f"p{p}_ttft_ms": (metrics or {}).get(f"p{p}_ttft_ms"),
                f"p{p}_tpot_ms": (metrics or {}).get(f"p{p}_tpot_ms"),
            })
            verdicts[key] = ok
        return verdicts

    low = round_rate(slo.rate_low)
    high = round_rate(slo.rate_high)
    v_high = probe_round({k: high for k in curves})
    v_low = probe_round({k: low for k in curves if not v_high[k]})
    for key, c in curves.items():
        if v_high[key]:
            c.lo, c.done = high, True
        elif not v_low[key]:
            c.hi, c.done = low, True
        else:
            c.lo, c.hi = low, high
    for _ in range(slo.iterations):
        active = {k: c for k, c in curves.items() if not c.done}
        if not active:
            break
        mids = {}
        for k, c in active.items():
            mid = round_rate(math.sqrt(c.lo * c.hi))
            if mid <= c.lo or mid >= c.hi:
                c.done = True          # the bracket is as narrow as 4 digits can say
            else:
                mids[k] = mid
        if not mids:
            break
        verdicts = probe_round(mids)
        for k, ok in verdicts.items():
            if ok:
                curves[k].lo = mids[k]
            else:
                curves[k].hi = mids[k]
    return [c.result(slo) for c in curves.values()], list(all_probes.values())
