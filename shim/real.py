"""The real primitives, as they were before revati patched anything (Note [Patch registry],
revati/shim/patching.py).

revati's own machinery -- the timekeeper client, the wait primitives, the settle delays, the
real clocks a driver reports wall time with -- must keep using real time, real sleeps and real
selects after the program's are virtual. This module captures them once, at import, and
``revati.shim`` imports it before any installer runs, so every later import of it (however
late) still holds the originals. Nothing else in the shim captures a primitive of its own.
"""

from __future__ import annotations

import _thread
import os
import select
import time

# time: what vtime replaces with virtual clocks
TIME = {name: getattr(time, name) for name in (
    "time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "sleep")}
sleep = time.sleep
monotonic = time.monotonic
perf_counter = time.perf_counter
# CPU clocks: never patched, named here so the clock's users read them from one place
process_time_ns = time.process_time_ns
thread_time_ns = time.thread_time_ns

# select: what vwait replaces with virtual waits
select_select = select.select
select_poll = select.poll

# threads and descriptors the timekeeper client uses on its own
allocate_lock = _thread.allocate_lock
start_new_thread = _thread.start_new_thread
get_ident = _thread.get_ident
get_native_id = _thread.get_native_id
os_read = os.read
os_write = os.write
