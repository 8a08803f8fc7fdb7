"""A deadline loop that waits out a sub-nanosecond remainder; prints how many waits it took (JSON).

usage: revati emulate --no-host-cpu -- python deadline_loop.py
The pattern of asyncio's loop and of many ``while now < end: wait(end - now)`` loops. Without host
CPU counted only the waits move the clock: a remainder rounded down to a 0 ns wait never ends.
"""
import json
import selectors
import time

sel = selectors.DefaultSelector()
waits = 0
for remainder_s in (5e-10, 9.99e-10, 1.5e-9, 1e-3 + 3e-10):
    end = time.monotonic() + remainder_s
    while time.monotonic() < end and waits < 10_000:
        sel.select(end - time.monotonic())
        waits += 1
t0 = time.monotonic_ns()
time.sleep(4e-10)
slept_ns = time.monotonic_ns() - t0
print(json.dumps({"waits": waits, "slept_ns": slept_ns}))
