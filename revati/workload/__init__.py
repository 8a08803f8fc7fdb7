"""Serving workloads: arrival processes, request lengths, recorded traces, prompts.

Entry point: :func:`revati.workload.spec.build_workload` turns a :class:`WorkloadConfig` (the
flags of ``revati bench serve``) into a list of :class:`WorkloadRequest`, seeded and
deterministic. Times are offsets in seconds on the ordinary Python clocks, which are virtual
under ``revati emulate`` and real elsewhere. The command-line flags that set a workload are
declared once, in :mod:`revati.workload.options`.
"""

from revati.workload.request import WorkloadRequest
from revati.workload.spec import WorkloadConfig, build_workload

__all__ = ["WorkloadConfig", "WorkloadRequest", "build_workload"]
