"""The process's virtual host clock.

# Note [Virtual host clock]
# The host clock of an emulated process advances by
#   - the CPU time the program itself spends (process CPU time, i.e. all its threads), minus
#     the CPU time spent inside revati (the shim's dispatch, value propagation, coordination):
#     what the framework would spend on a real GPU box, not what emulation costs here;
#   - modelled costs that exist on a GPU box but not here (kernel launch overhead), charged
#     explicitly;
#   - jumps at synchronisation points and granted waits (never backwards).
# CPU time rather than wall time keeps the clock honest when other emulated processes share
# the cores. ``host_ns()`` is how much of the clock's advance came from measured host CPU (the
# part of a run's result that depends on this machine, scaled to --host-cpu). With
# ``count_host_cpu=False`` the clock moves only by charges and jumps, which makes runs
# bit-for-bit repeatable (used by tests).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

cpu_ns = time.process_time_ns

# Note [Host-time drift filter]
# =============================
# This machine does the same host work at different speeds from second to second (a VM's
# frequency drifts ~12% within seconds; other processes on the cores slow it further), so raw
# CPU time made the main job's TPOT spread 22% over five idle runs. The program's own repeated
# work is the probe: the host CPU between two consecutive top-level ops (a *segment*, keyed by
# the pair of ops) recurs every layer and every step. Each segment's time over the fastest time
# seen for its key is a sample of "how slow the machine is now"; the median of the last
# DRIFT_WINDOW samples (refreshed every DRIFT_REFRESH) divides all measured host time. The
# reference is the machine at its fastest, as the host calibration score is (the minimum over
# repeats: Note [Host-speed calibration]), so host time is this machine's best, scaled to the
# target host. Keys whose fastest segment is under DRIFT_MIN_NS are too short to time and are
# not sampled.
# A run's own fastest times depend on whether the machine had a fast moment during it, so the
# references persist per machine and program (``shim/host_references.py``): each run starts
# from the fastest times of the runs before it and adds its own.
DRIFT_WINDOW = 512
DRIFT_REFRESH = 64
DRIFT_MIN_NS = 20_000
DRIFT_BOUNDS = (0.5, 3.0)


class ProcessClock:
    """Virtual nanoseconds for this process. See Note [Virtual host clock]."""

    def __init__(self, start_ns: int = 0, count_host_cpu: bool = True, host_speed: float = 1.0,
                 extra_excluded_ns: Callable[[], int] | None = None):
        if host_speed <= 0:
            raise ValueError(f"host_speed must be positive, got {host_speed}")
        self.count_host_cpu = count_host_cpu
        self._scale = 1.0 / host_speed
        self._extra = extra_excluded_ns
        self._lock = threading.Lock()
        self.shim_cpu_ns = 0          # CPU time spent inside revati (excluded)
        self._base_v = int(start_ns)
        self._base_cpu = cpu_ns()
        self._base_excl = self._excluded()
        self._host_before_base = 0  # host CPU (scaled) counted before the current base
        # Note [Host-time drift filter]
        self.drift = 1.0
        self.drift_filter = True
        self._seg_key: object = None
        self._seg_cpu = self._base_cpu
        self._seg_excl = self._base_excl
        self._seg_best: dict = {}
        self._seg_ratios: list[float] = []
        self._seg_new = 0
        self.references: dict[tuple[str, str], int] = {}   # fastest segments of earlier runs
        # Called with the new time after every forward jump (a sync, a granted wait, a message's
        # stamp): the waits of other threads that the jump passed end (Note [Threads in virtual
        # time], revati/shim/vwait.py).
        self.after_jump: Callable[[int], None] | None = None

    def _excluded(self) -> int:
        return self.shim_cpu_ns + (self._extra() if self._extra is not None else 0)

    def now_at(self, cpu: int) -> int:
        """Virtual time for a process-CPU reading taken by the caller."""
        if not self.count_host_cpu:
            return self._base_v
        own = cpu - self._base_cpu - (self._excluded() - self._base_excl)
        return self._base_v + (int(own * self._scale / self.drift) if own > 0 else 0)

    def now(self) -> int:
        return self.now_at(cpu_ns())

    def host_ns(self) -> int:
        """Virtual ns this clock has advanced by measured host CPU (not charges or jumps), so far."""
        return self._host_before_base + (self.now() - self._base_v)

    def forget_host_cpu_so_far(self) -> None:
        """CPU time spent until now was revati's (activation: torch's CUDA stand-ins, the
        predictor), not the program's: the clock keeps its reading and counts from here."""
        with self._lock:
            cpu = cpu_ns()
            self._base_cpu = self._seg_cpu = cpu
            self._base_excl = self._seg_excl = self._excluded()

    def segment(self, key: object, cpu: int) -> None:
        """A top-level op starts (``key``: the op) at process-CPU reading ``cpu``: the host work
        since the last one is a drift sample. Note [Host-time drift filter]."""
        if not self.drift_filter or not self.count_host_cpu:
            return
        excl = self._excluded()
        own = cpu - self._seg_cpu - (excl - self._seg_excl)
        pair = (self._seg_key, key)
        self._seg_key, self._seg_cpu, self._seg_excl = key, cpu, excl
        if own <= 0:
            return
        best = self._seg_best.get(pair)
        if best is None and self.references:
            best = self.references.get((str(pair[0]), str(key)))
        if best is None or own < best:
            self._seg_best[pair] = own
        # a key is a sample only if even its fastest time is long enough to time: a threshold on
        # each segment instead would keep only the slow tail of short keys and read it as speed
        if best is None or best < DRIFT_MIN_NS:
            return
        ratios = self._seg_ratios
        ratios.append(own / best)
        self._seg_new += 1
        if self._seg_new < DRIFT_REFRESH:
            return
        self._seg_new = 0
        if len(ratios) > DRIFT_WINDOW:
            del ratios[:len(ratios) - DRIFT_WINDOW]
        ordered = sorted(ratios)
        drift = min(max(ordered[len(ordered) // 2], DRIFT_BOUNDS[0]), DRIFT_BOUNDS[1])
        with self._lock:   # the time so far at the old factor, from here at the new one
            now = self.now_at(cpu)
            self._host_before_base += now - self._base_v
            self._base_v, self._base_cpu, self._base_excl = now, cpu, excl
            self.drift = drift

    def segment_references(self) -> dict[tuple[str, str], int]:
        """The fastest time of every segment, this run and earlier ones (by op names)."""
        out = dict(self.references)
        for (a, b), ns in list(self._seg_best.items()):
            k = (str(a), str(b))
            out[k] = min(ns, out.get(k, ns))
        return out

    def exclude(self, ns: int) -> None:
        """CPU time spent in revati, not in the program."""
        self.shim_cpu_ns += ns

    def charge(self, ns: int) -> None:
        """A modelled host cost (kernel launch overhead, ...)."""
        self._base_v += int(ns)

    def advance_to(self, t_ns: int) -> int:
        """Jump forward to ``t_ns`` if it is later than now; return the new now."""
        with self._lock:
            cpu = cpu_ns()
            now = self.now_at(cpu)
            if t_ns <= now:
                return now
            self._host_before_base += now - self._base_v
            self._base_v = int(t_ns)
            self._base_cpu = cpu
            self._base_excl = self._excluded()
        if self.after_jump is not None:
            self.after_jump(int(t_ns))
        return int(t_ns)
