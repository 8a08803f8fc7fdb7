"""Print a result as a table, the way ``vllm bench serve`` prints its summary.

Example::

    from revati.metrics.summary import print_summary
    print_summary(result)          # result: the dict of revati.metrics.result.build_result
"""

from __future__ import annotations

import re

from rich.console import Console
from rich.table import Table

_HEADERS = {
    "ttft": "Time to First Token",
    "tpot": "Time per Output Token (excl. 1st token)",
    "itl": "Inter-token Latency",
    "e2el": "End-to-end Latency",
}
_STAT = re.compile(r"^(mean|median|std|p[0-9.]+)_(ttft|tpot|itl|e2el)_ms$")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def summary_table(result: dict, title: str = "Serving Benchmark Result") -> Table:
    table = Table(title=title, show_header=False, title_style="bold")
    table.add_column("metric", style="cyan")
    table.add_column("value", justify="right")

    def row(label: str, key: str) -> None:
        if key in result:
            table.add_row(label, _fmt(result[key]))

    row("Successful requests", "completed")
    row("Failed requests", "failed")
    if result.get("max_concurrency") is not None:
        row("Maximum request concurrency", "max_concurrency")
    if result.get("request_rate") not in (None, "inf"):
        row("Request rate configured (RPS)", "request_rate")
    row("Benchmark duration (s)", "duration")
    row("Total input tokens", "total_input_tokens")
    row("Total generated tokens", "total_output_tokens")
    row("Request throughput (req/s)", "request_throughput")
    if result.get("request_goodput") is not None:
        row("Request goodput (req/s)", "request_goodput")
    row("Output token throughput (tok/s)", "output_throughput")
    row("Peak output token throughput (tok/s)", "max_output_tokens_per_s")
    row("Peak concurrent requests", "max_concurrent_requests")
    row("Total token throughput (tok/s)", "total_token_throughput")
    for metric, header in _HEADERS.items():
        keys = [k for k in result if (m := _STAT.match(k)) and m.group(2) == metric and m.group(1) != "std"]
        if not keys:
            continue
        table.add_section()
        table.add_row(f"[bold]{header}[/bold]", "")
        for k in keys:
            stat = _STAT.match(k).group(1)
            label = {"mean": "Mean", "median": "Median"}.get(stat, stat.upper())
            table.add_row(f"{label} {metric.upper()} (ms)", _fmt(result[k]))
    table.add_section()
    row("Virtual duration (s)", "virtual_duration_s")
    row("Wall duration (s)", "wall_duration_s")
    row("Speedup (virtual / wall)", "speedup")
    row("Fallback kernel launches (roofline)", "fallback_op_count")
    row("GPU", "gpu")
    row("Model", "model")
    row("Host CPU (host time scaled to)", "host_cpu")
    if result.get("host_time_share") is not None:
        table.add_row("Host CPU share of virtual time", f"{result['host_time_share']:.0%}")
    return table


def print_summary(result: dict, console: Console | None = None) -> None:
    from revati.console import console as make_console

    (console or make_console()).print(summary_table(result))
