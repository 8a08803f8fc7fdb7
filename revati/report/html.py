"""A self-contained HTML report: images embedded as data URIs, inline CSS, no scripts, no
network. Example::

    from revati.report.html import write_report
    write_report("sweep_results.parquet", "report/")
"""

from __future__ import annotations

import base64
import html
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from revati.parquet_io import atomic_write_bytes
from revati.report import plots
from revati.report.data import load_curves, varying_keys

REPORT_FILE = "report.html"
LATENCY_PNG = "latency_vs_rate.png"
PARETO_PNG = "pareto_front.png"
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%}.note{color:#666;font-size:13px}"""
_COLUMNS = (("request_rate", "rate (req/s)"), ("output_throughput", "out tok/s"), ("p50_ttft_ms", "p50 TTFT"),
            ("p99_ttft_ms", "p99 TTFT"), ("p50_tpot_ms", "p50 TPOT"), ("p99_tpot_ms", "p99 TPOT"),
            ("p99_e2el_ms", "p99 E2EL"), ("speedup", "speedup"))


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _num(v) -> str:
    return "-" if v is None else f"{v:,.2f}" if isinstance(v, float) else html.escape(str(v))


def write_report(results_path: str | os.PathLike, out_dir: str | os.PathLike, title: str | None = None) -> dict[str, Path]:
    """Write the PNGs and ``report.html`` into ``out_dir``; return their paths."""
    results_path = Path(results_path)
    out = Path(out_dir)
    curves, failed = load_curves(results_path)
    slo_results, slo_note = _read_slo(results_path.parent / "slo_search.json")
    targets = next((r.get("slo") for r in slo_results or [] if r.get("slo")), None)
    latency = plots.latency_vs_rate(curves, targets)
    pareto = plots.pareto_front(curves)
    paths = {"latency": out / LATENCY_PNG, "pareto": out / PARETO_PNG, "html": out / REPORT_FILE}
    atomic_write_bytes(paths["latency"], latency)
    atomic_write_bytes(paths["pareto"], pareto)

    title = title or f"revati sweep report: {results_path.parent.name}"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='note'>From <code>{html.escape(str(results_path))}</code>: {len(curves)} configuration(s), "
             f"{sum(len(c.points) for c in curves)} successful run(s), {failed} failed. "
             f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.</p>"]
    if slo_results is not None:
        parts.append(_slo_table(slo_results, targets))
    elif slo_note:
        parts.append(f"<p class='note'>{html.escape(slo_note)}</p>")
    parts += ["<h2>Latency vs request rate</h2>", _img(latency, "latency vs request rate"),
              "<h2>Throughput per GPU vs per-user throughput</h2>", _img(pareto, "Pareto front")]
    parts.append("<h2>Runs</h2>")
    for c in curves:
        parts.append(f"<h3>{html.escape(c.label)}</h3><table><tr>"
                     + "".join(f"<th>{h}</th>" for _, h in _COLUMNS) + "</tr>")
        for p in c.points:
            parts.append("<tr>" + "".join(f"<td>{_num(p.metrics.get(k))}</td>" for k, _ in _COLUMNS) + "</tr>")
        parts.append("</table>")
    parts.append("<p class='note'>Latencies in ms, as vllm bench serve reports them. Made by revati report.</p></body></html>")
    atomic_write_bytes(paths["html"], "\n".join(parts).encode("utf-8"))
    return paths


def _read_slo(path: Path) -> tuple[list[dict] | None, str]:
    if not path.exists():
        return None, ""
    try:
        return json.loads(path.read_text(encoding="utf-8")), ""
    except ValueError:
        return None, "slo_search.json is unreadable; SLO table left out."


def slo_sentence(targets: dict | None) -> str:
    """What "meeting the SLOs" means, in words."""
    if not targets:
        return "SLO targets: not recorded by this sweep (made before they were stored)."
    p = f"{float(targets.get('percentile', 99)):g}"
    parts = [f"p{p} {name} <= {targets[key]:g} ms" for key, name in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"))
             if targets.get(key) is not None]
    return "SLOs: " + " and ".join(parts) + " (red dotted lines in the latency plots)."


def _slo_table(results: list[dict], targets: dict | None) -> str:
    # Only the keys that differ between rows: the constant ones are the sweep's, said once.
    engine_keys = varying_keys([r.get("engine") or {} for r in results])
    workload_keys = varying_keys([r.get("workload") or {} for r in results])
    const = {**{k: v for k, v in (results[0].get("engine") or {}).items() if k not in engine_keys},
             **{k: v for k, v in (results[0].get("workload") or {}).items() if k not in workload_keys}} if results else {}
    rows = ["<h2>Highest request rate meeting the SLOs</h2>",
            f"<p class='slo'>{html.escape(slo_sentence(targets))}</p>"]
    if const:
        rows.append("<p class='note'>Same in every row: "
                    + html.escape(", ".join(f"{k}={v}" for k, v in sorted(const.items()))) + "</p>")
    rows.append("<table><tr><th class='l'>GPU</th>"
                + "".join(f"<th class='l'>{html.escape(k)}</th>" for k in engine_keys + workload_keys)
                + "<th>max rate (req/s)</th><th>bracket</th></tr>")
    for r in results:
        rate = "none in range" if r.get("max_rate") is None else _num(float(r["max_rate"]))
        if r.get("at_upper_bound"):
            rate += " (upper bound)"
        lo, hi = (r.get("bracket") or [None, None])[:2]
        cells = [(r.get("engine") or {}).get(k) for k in engine_keys] + \
                [(r.get("workload") or {}).get(k) for k in workload_keys]
        rows.append(f"<tr><td class='l'>{_num(r.get('gpu'))}</td>"
                    + "".join(f"<td class='l'>{_num(v)}</td>" for v in cells)
                    + f"<td>{rate}</td><td>[{_num(lo)}, {_num(hi)}]</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)
