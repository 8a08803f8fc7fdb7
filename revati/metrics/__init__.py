"""Serving metrics: per-request records, vLLM-compatible aggregates, result files, the summary table."""

from revati.metrics.aggregate import MetricsConfig, compute_metrics, parse_goodput
from revati.metrics.records import RequestRecord
from revati.metrics.result import RunExtras, build_result

__all__ = ["MetricsConfig", "RequestRecord", "RunExtras", "build_result", "compute_metrics", "parse_goodput"]
