"""The report's pictures, as PNG bytes (matplotlib, Agg backend: no display needed).

- :func:`latency_vs_rate`: TTFT, TPOT and E2EL against request rate, p50 solid and p99
  dashed, one colour per configuration; the SLO targets (if the sweep searched for them) as
  red horizontal lines; a log latency axis where the values span more than a decade.
- :func:`pareto_front`: output throughput per GPU (tok/s/GPU) against per-user throughput
  (tok/s/user = 1000 / mean TPOT in ms: how fast one user sees tokens), every run a point, the
  front of runs no other run beats on both axes drawn as a line.
"""

from __future__ import annotations

import io

from revati.report.data import Curve

_LATENCIES = (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2el", "E2EL"))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


LOG_SPAN = 10.0  # max/min of a panel's values beyond which its latency axis is logarithmic


def latency_vs_rate(curves: list[Curve], slo: dict | None = None) -> bytes:
    """``slo``: {"percentile": 99, "ttft_ms": 500, "tpot_ms": 25} (either target may be None)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (metric, name) in zip(axes, _LATENCIES):
        values: list[float] = []
        for i, c in enumerate(curves):
            colour = colours[i % len(colours)]
            rates = [p.request_rate for p in c.points]
            for stat, style in (("p50", "-"), ("p99", "--")):
                ys = [p.metrics.get(f"{stat}_{metric}_ms") for p in c.points]
                pts = [(x, y) for x, y in zip(rates, ys) if y is not None]
                values += [y for _, y in pts if y > 0]
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", ms=3, color=colour,
                            label=f"{c.label} ({stat})" if metric == "ttft" else None)
        target = (slo or {}).get(f"{metric}_ms")
        if target:
            ax.axhline(target, color="red", lw=1.2, ls=":")
            ax.annotate(f"SLO: p{_pct(slo)} {name} <= {target:g} ms", xy=(0.02, target), xycoords=("axes fraction", "data"),
                        color="red", fontsize=8, va="bottom")
            values.append(float(target))
        ax.set_title(f"{name} vs request rate")
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel(f"{name} (ms)")
        ax.set_xscale("log")
        if values and min(values) > 0 and max(values) / min(values) > LOG_SPAN:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    if curves:
        fig.legend(loc="lower center", ncol=min(4, 2 * len(curves)), fontsize=8, bbox_to_anchor=(0.5, -0.02 - 0.04 * len(curves)))
    fig.suptitle("Latency vs request rate (solid: p50, dashed: p99)")
    return _png(fig)


def _pct(slo: dict) -> str:
    p = float(slo.get("percentile", 99))
    return f"{p:g}"


def pareto_points(curves: list[Curve]) -> list[tuple[float, float, str, float]]:
    """(tok/s/user, tok/s/GPU, label, rate) of every run with both numbers."""
    out = []
    for c in curves:
        for p in c.points:
            tpot = p.metrics.get("mean_tpot_ms")
            thr = p.metrics.get("output_throughput")
            if tpot and thr is not None and tpot > 0:
                out.append((1000.0 / tpot, thr / max(1, p.num_gpus), c.label, p.request_rate))
    return out


def front(points: list[tuple[float, float, str, float]]) -> list[tuple[float, float, str, float]]:
    """Points not beaten on both axes, by per-user throughput descending."""
    best_y = float("-inf")
    kept = []
    for pt in sorted(points, key=lambda p: (-p[0], -p[1])):
        if pt[1] > best_y:
            kept.append(pt)
            best_y = pt[1]
    return kept


def pareto_front(curves: list[Curve]) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    pts = pareto_points(curves)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, c in enumerate(curves):
        mine = [p for p in pts if p[2] == c.label]
        if mine:
            ax.scatter([p[0] for p in mine], [p[1] for p in mine], s=18, color=colours[i % len(colours)], label=c.label)
    f = front(pts)
    if f:
        ax.plot([p[0] for p in f], [p[1] for p in f], "k-", lw=1.2, label="Pareto front")
    ax.set_xlabel("per-user throughput (tok/s/user = 1000 / mean TPOT)")
    ax.set_ylabel("output throughput per GPU (tok/s/GPU)")
    ax.set_title("Throughput per GPU vs per-user throughput")
    ax.grid(True, alpha=0.3)
    # Outside the axes: inside, it covered the points of the very front it explains.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _png(fig)
