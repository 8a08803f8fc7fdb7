"""Pair bpf launch records with the Kineto/CUPTI runtime records of the same run.

bpf rows have no correlation id (uprobes cannot see CUPTI's), so they cannot join ``kernels``
directly. Within one process and thread, both backends saw the same calls in the same order,
a few microseconds apart (probe overhead, clock conversion). The join walks both sequences of
the same API per (pid, tid) in time order, after removing the median clock offset between
them, and pairs calls whose start times agree within a tolerance; a call one side missed (a
library probed late, a CUPTI buffer dropped) is skipped, not mis-paired. The bpf row then gets
the runtime row's correlation id, which joins ``kernels``/``memory_ops``.

Pure Python over row dicts.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from revati.tracer.kineto_convert import api_base_name

DEFAULT_TOLERANCE_NS = 200_000  # 200 µs after offset removal


@dataclass
class JoinStats:
    bpf_calls: int = 0
    runtime_calls: int = 0
    paired: int = 0
    offset_ns: dict | None = None


def join_launches(bpf_rows: list[dict[str, Any]], runtime_rows: Iterable[dict[str, Any]],
                  tolerance_ns: int = DEFAULT_TOLERANCE_NS) -> JoinStats:
    """Fill ``correlation_id`` of ``bpf_rows`` in place from matching ``runtime_rows``."""
    stats = JoinStats(offset_ns={})
    bpf_groups: dict[tuple, list[dict]] = defaultdict(list)
    rt_groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in bpf_rows:
        bpf_groups[(row["pid"], row["tid"], api_base_name(row["api_name"]))].append(row)
        stats.bpf_calls += 1
    for row in runtime_rows:
        if row.get("correlation_id") is None:
            continue
        rt_groups[(row["pid"], row["tid"], api_base_name(row["api_name"]))].append(row)
        stats.runtime_calls += 1
    for key, bpf in bpf_groups.items():
        runtime = rt_groups.get(key)
        if not runtime:
            continue
        bpf.sort(key=lambda r: r["start_ns"])
        runtime.sort(key=lambda r: r["start_ns"])
        offset = _offset(bpf, runtime, tolerance_ns)
        stats.offset_ns[f"{key[0]}/{key[1]}/{key[2]}"] = offset
        for i, j in _pairs(bpf, runtime, offset, tolerance_ns):
            bpf[i]["correlation_id"] = runtime[j]["correlation_id"]
            stats.paired += 1
    return stats


def _pairs(bpf: list[dict], runtime: list[dict], offset: int, tolerance_ns: int) -> list[tuple[int, int]]:
    """Order-preserving pairs: a call pairs with the other side's current call unless a
    neighbour on either side fits better (then the current one was missed by the other side)."""
    def delta(i: int, j: int) -> int:
        return runtime[j]["start_ns"] - (bpf[i]["start_ns"] + offset)

    out = []
    i = j = 0
    while i < len(bpf) and j < len(runtime):
        d = delta(i, j)
        if abs(d) > tolerance_ns:
            if d > 0:
                i += 1   # bpf saw a call the runtime trace lacks
            else:
                j += 1
            continue
        if j + 1 < len(runtime) and abs(delta(i, j + 1)) < abs(d):
            j += 1
            continue
        if i + 1 < len(bpf) and abs(delta(i + 1, j)) < abs(d):
            i += 1
            continue
        out.append((i, j))
        i += 1
        j += 1
    return out


def _offset(bpf: list[dict], runtime: list[dict], tolerance_ns: int, head: int = 8, sample: int = 400) -> int:
    """The clock offset (runtime minus bpf) that pairs the most calls: candidates are the
    differences between the first few calls of each side, scored on the first ``sample`` calls."""
    candidates = {r["start_ns"] - b["start_ns"] for b in bpf[:head] for r in runtime[:head]}
    if not candidates:
        return 0
    bpf_s, rt_s = bpf[:sample], runtime[:sample]

    def score(off: int) -> tuple[int, int]:
        pairs = _pairs(bpf_s, rt_s, off, tolerance_ns)
        spread = sum(abs(rt_s[j]["start_ns"] - bpf_s[i]["start_ns"] - off) for i, j in pairs)
        return len(pairs), -spread

    best = max(sorted(candidates), key=score)
    # refine: the median residual of the pairs it makes
    residuals = [rt_s[j]["start_ns"] - bpf_s[i]["start_ns"] for i, j in _pairs(bpf_s, rt_s, best, tolerance_ns)]
    return int(statistics.median(residuals)) if residuals else best
