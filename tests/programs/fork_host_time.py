"""A parent uses 1 s of CPU, then forks; the child uses 0.5 s and prints how much virtual time
passed for it. A forked child's CPU time restarts from zero: its host clock must count from
there (ProcessClock.after_fork_in_child)."""
import json
import os
import time

t0 = time.thread_time()
while time.thread_time() - t0 < 1.0:
    pass
pid = os.fork()
if pid == 0:
    v0 = time.perf_counter()
    c0 = time.thread_time()
    while time.thread_time() - c0 < 0.5:
        pass
    print(json.dumps({"child_virtual_s": time.perf_counter() - v0, "child_cpu_s": time.thread_time() - c0}), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
