"""Where an emulated process's wall time went (issue: faster than the GPU).

# Note [Wall-time breakdown]
# From activation to exit, a process's real time is split into
#   - framework_cpu: CPU the program itself spent (its Python, the serving framework's host
#     work): what a GPU box also spends, the floor of any emulation;
#   - shim_cpu: revati's CPU in the program's threads (op dispatch, value propagation, the
#     predictor, waits' bookkeeping) -- the ShimCall / _dispatch exclusions of the host clock;
#   - coordination_cpu: the timekeeper client's own reader thread;
#   - gc_full_cpu: full garbage collections (left out of the clock, design notes 11);
#   - off_cpu: real time the process was not on a CPU (wall - CPU): blocked in a virtual wait
#     until the timekeeper granted it or data came, waiting for a core, stall checks;
# and start-up (imports, the predictor) before the program's first line is reported apart.
# ``efficiency`` = framework_cpu / wall: 1.0 means the emulation costs nothing beyond the
# framework's own work. CPU of several threads can exceed wall time; off_cpu is then 0.
"""

from __future__ import annotations

from revati.shim import real


class WallClockStart:
    """Readings at the end of activation, to measure the program's part of the run from."""

    def __init__(self, clock):
        self.wall_s = real.monotonic()
        self.cpu_ns = real.process_time_ns()
        self.shim_ns = clock.shim_cpu_ns
        self.coordination_ns = clock.coordination_ns()
        self.gc_ns = clock.gc_full_ns


def breakdown(rt, start: WallClockStart, startup_s: float | None = None) -> dict:
    """Note [Wall-time breakdown], in seconds, for this process from ``start`` until now."""
    clock = rt.clock
    wall = real.monotonic() - start.wall_s
    cpu = (real.process_time_ns() - start.cpu_ns) / 1e9
    shim = (clock.shim_cpu_ns - start.shim_ns) / 1e9
    coordination = (clock.coordination_ns() - start.coordination_ns) / 1e9
    gc_full = (clock.gc_full_ns - start.gc_ns) / 1e9
    framework = max(cpu - shim - coordination - gc_full, 0.0)
    out = {"wall_s": wall, "framework_cpu_s": framework, "shim_cpu_s": shim,
           "coordination_cpu_s": coordination, "gc_full_cpu_s": gc_full, "off_cpu_s": max(wall - cpu, 0.0),
           "efficiency": framework / wall if wall > 0 else None}
    if startup_s is not None:
        out["startup_s"] = startup_s
    return out


def run_breakdown(processes: list[dict], wall_s: float) -> dict:
    """The processes' breakdowns summed, and the run's efficiency against its wall time."""
    keys = ("framework_cpu_s", "shim_cpu_s", "coordination_cpu_s", "gc_full_cpu_s", "off_cpu_s", "startup_s")
    total = {k: sum((p.get("breakdown") or {}).get(k, 0.0) for p in processes) for k in keys}
    total["processes"] = sum(1 for p in processes if p.get("breakdown"))
    total["wall_s"] = wall_s
    total["efficiency"] = total["framework_cpu_s"] / wall_s if wall_s > 0 else None
    return total


def format_line(name: str, b: dict) -> str:
    eff = b.get("efficiency")
    return (f"{name}: wall {b['wall_s']:.2f} s = framework CPU {b['framework_cpu_s']:.2f} + shim CPU "
            f"{b['shim_cpu_s']:.2f} + coordination {b['coordination_cpu_s']:.2f} + full GC "
            f"{b['gc_full_cpu_s']:.2f} + off CPU {b['off_cpu_s']:.2f} s"
            + (f"; start-up {b['startup_s']:.2f} s" if b.get("startup_s") else "")
            + (f"; efficiency {eff:.2f}" if eff is not None else ""))
