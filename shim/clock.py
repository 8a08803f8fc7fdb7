"""The process's virtual host clock.

# Note [Virtual host clock]
# The host clock of an emulated process advances by
#   - the CPU time the program itself spends (process CPU time, i.e. all its threads), minus
#     the CPU time spent inside revati (the shim's dispatch, value propagation, coordination):
#     what the framework would spend on a real GPU box, not what emulation costs here;
#   - modelled costs that exist on a GPU box but not here (kernel launch overhead), charged
#     explicitly;
#   - jumps at synchronisation points and granted waits (never backwards).
# Full (oldest-generation) garbage collections are left out (``install_gc_exclusion``): their
# cost scales with the whole heap, which here holds revati's objects too (op caches, the
# predictor's tables), and when they fire depends on revati's allocations; they took 80-300 ms
# each in the main job and moved its first request's TTFT by 14 ms from run to run. Young
# collections (proportional to recent allocations, ~0.1 ms) stay counted. What this leaves out:
# the real program's own full collections on the GPU box (engines that care call gc.freeze()).
# CPU time rather than wall time keeps the clock honest when other emulated processes share
# the cores. ``host_ns()`` is how much of the clock's advance came from measured host CPU (the
# part of a run's result that depends on this machine, scaled to --host-cpu). With
# ``count_host_cpu=False`` the clock moves only by charges and jumps, which makes runs
# bit-for-bit repeatable (used by tests).
"""

from __future__ import annotations

import threading
from typing import Callable

from revati.shim.real import process_time_ns as cpu_ns
from revati.shim.real import thread_time_ns as thread_cpu_ns

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
HOLD_LOG_MAX = 64


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
        self.gc_full_ns = 0           # full garbage collections (excluded too)
        self.other_excluded_ns = 0    # exclude_nested: held-for threads, full collections
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
        # Note [Threads in virtual time] (revati/shim/vwait.py): a thread woken by another
        # thread's jump runs at its own deadline until it waits again (its *lag*), and the CPU
        # it spends while the jumping thread holds for it is not the shared clock's.
        self._tls = threading.local()
        self._lagging = 0          # threads with a lag (the hot path reads TLS only if any)
        self._holds: list[tuple[int, int, int]] = []   # (thread ident, cpu at hold start, ns)
        # Called with the new time after every forward jump (a sync, a granted wait, a message's
        # stamp): the waits of other threads that the jump passed end (Note [Threads in virtual
        # time], revati/shim/vwait.py).
        self.after_jump: Callable[[int], None] | None = None

    def _excluded(self) -> int:
        return self.shim_cpu_ns + self.other_excluded_ns + self.coordination_ns()

    def excluded_ns(self) -> int:
        """Process CPU so far that is not the program's (revati's, and held-for threads')."""
        return self._excluded()

    def coordination_ns(self) -> int:
        """CPU of the coordinator's own thread so far (excluded too)."""
        return self._extra() if self._extra is not None else 0

    def now_at(self, cpu: int) -> int:
        """Virtual time for a process-CPU reading taken by the caller."""
        if self._lagging and getattr(self._tls, "lag", None) is not None:
            return self._lag_now()
        return self._shared_at(cpu)

    def _shared_at(self, cpu: int) -> int:
        if not self.count_host_cpu:
            return self._base_v
        own = cpu - self._base_cpu - (self._excluded() - self._base_excl)
        return self._base_v + (int(own * self._scale / self.drift) if own > 0 else 0)

    def now(self) -> int:
        return self.now_at(cpu_ns())

    # -- a thread's lag: Note [Threads in virtual time] -----------------------------------------
    def begin_lag(self, at_ns: int) -> bool:
        """This thread was woken at ``at_ns`` by another thread's jump past its deadline: until
        it waits again it runs at its own time from there (its own CPU, its own charges), at
        most the shared clock. False (no lag) if the shared clock is not past ``at_ns``."""
        if self._shared_at(cpu_ns()) <= at_ns:
            return False
        if getattr(self._tls, "lag", None) is None:
            with self._lock:
                self._lagging += 1
        self._tls.lag = [int(at_ns), thread_cpu_ns()]
        return True

    def end_lag(self) -> None:
        """This thread waits again (or ends): it is back on the shared clock."""
        if self.lagging():
            self._tls.lag = None
            with self._lock:
                self._lagging -= 1

    def lag_to(self, t_ns: int) -> bool:
        """A lagged thread's wait until ``t_ns``: if that is still before the shared clock's
        present, the wait is over at once and the thread runs on from ``t_ns``, still lagged.
        False (nothing changed) otherwise: the thread must really wait."""
        if not self.lagging():
            return False
        if t_ns <= self._lag_now():
            return self.lagging()
        if t_ns >= self._shared_at(cpu_ns()):
            return False
        self._tls.lag = [int(t_ns), thread_cpu_ns()]
        return True

    def lagging(self) -> bool:
        return self._lagging > 0 and getattr(self._tls, "lag", None) is not None

    def _lag_now(self) -> int:
        lag = self._tls.lag
        if self.count_host_cpu:
            own = thread_cpu_ns() - lag[1]
            t = lag[0] + (int(own * self._scale / self.drift) if own > 0 else 0)
        else:
            t = lag[0]
        shared = self._shared_at(cpu_ns())
        if t < shared:
            return t
        self.end_lag()       # caught up: one clock again
        return shared

    def exclude_nested(self, cpu_at_start: int, ns: int) -> None:
        """``ns`` of CPU from ``cpu_at_start`` on, in this thread, is not the program's (threads
        it held for, Note [Threads in virtual time]; a full garbage collection, Note [Virtual host
        clock]). Excluded now; ``exclude_since`` of an enclosing shim call does not exclude it
        twice."""
        if ns <= 0:
            return
        self.other_excluded_ns += ns
        with self._lock:
            if len(self._holds) >= HOLD_LOG_MAX:   # a thread that never makes a shim call
                del self._holds[0]
            self._holds.append((threading.get_ident(), cpu_at_start, ns))

    def exclude_since(self, cpu0: int) -> None:
        """The CPU time since ``cpu0`` (a ``cpu_ns()`` reading of this thread's shim call) was
        revati's, not the program's."""
        ns = cpu_ns() - cpu0
        if self._holds:
            ns -= self._take_holds(cpu0)
        if ns > 0:
            self.shim_cpu_ns += ns

    def _take_holds(self, cpu0: int) -> int:
        # this thread's holds are settled here: the later ones were inside the shim call, the
        # earlier ones were not (and no later call of this thread can start before them)
        me = threading.get_ident()
        with self._lock:
            mine = [h for h in self._holds if h[0] == me]
            if not mine:
                return 0
            self._holds = [h for h in self._holds if h[0] != me]
        return sum(h[2] for h in mine if h[1] >= cpu0)

    def host_ns(self) -> int:
        """Virtual ns this clock has advanced by measured host CPU (not charges or jumps), so far."""
        return self._host_before_base + (self._shared_at(cpu_ns()) - self._base_v)

    def forget_host_cpu_so_far(self) -> None:
        """CPU time spent until now was revati's (activation: torch's CUDA stand-ins, the
        predictor), not the program's: the clock keeps its reading and counts from here."""
        with self._lock:
            cpu = cpu_ns()
            self._base_cpu = self._seg_cpu = cpu
            self._base_excl = self._seg_excl = self._excluded()

    def after_fork_in_child(self) -> None:
        """A forked child's process CPU time starts again from zero: measured from the parent's
        readings its clock stood still until the child had used as much CPU as the parent had
        (a forked engine core's host work went uncounted). Keep the reading, rebase the CPU."""
        self._lock = threading.Lock()
        self._tls = threading.local()
        self._lagging = 0
        self._holds = []
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
            # looked up by name once per pair: kept below even when this run is slower, or every
            # later op would pay the two str() calls again (~10% of a cached op)
            best = self.references.get((str(pair[0]), str(key)))
            if best is not None:
                self._seg_best[pair] = best
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
            now = self._shared_at(cpu)
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
        if self._lagging and getattr(self._tls, "lag", None) is not None:
            self._tls.lag[0] += int(ns)
            return
        self._base_v += int(ns)

    def advance_to(self, t_ns: int) -> int:
        """Jump forward to ``t_ns`` if it is later than now; return the new now."""
        if self.lagging():
            if self.lag_to(t_ns):      # still behind the shared clock: the lag moves on
                return max(int(t_ns), self._lag_now())
            self.end_lag()
        with self._lock:
            cpu = cpu_ns()
            now = self._shared_at(cpu)
            if t_ns <= now:
                return now
            self._host_before_base += now - self._base_v
            self._base_v = int(t_ns)
            self._base_cpu = cpu
            self._base_excl = self._excluded()
        if self.after_jump is not None:
            self.after_jump(int(t_ns))
        return int(t_ns)


def install_gc_exclusion(clock: ProcessClock,
                         excluded_threads: Callable[[], set[int]] | None = None) -> Callable[[], None]:
    """Leave full garbage collections out of ``clock`` (Note [Virtual host clock]); returns the
    function that stops it. ``excluded_threads``: threads whose whole CPU time the clock already
    leaves out (the timekeeper client's reader): a collection there must not be excluded twice
    -- it moved the clock back by the collection's length (a first launch measured -1.06 ms)."""
    import gc

    started: list[int] = []

    def on_gc(phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if excluded_threads is not None and threading.get_ident() in excluded_threads():
            return
        if phase == "start":
            started.append(cpu_ns())
        elif started:
            t0 = started.pop()
            ns = cpu_ns() - t0
            clock.gc_full_ns += ns
            clock.exclude_nested(t0, ns)

    gc.callbacks.append(on_gc)
    return lambda: gc.callbacks.remove(on_gc)
