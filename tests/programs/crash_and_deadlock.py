"""A parent and a child under one timekeeper, for the crash and deadlock tests.

usage: python crash_and_deadlock.py crash|deadlock
crash:    the child is SIGKILLed while the parent waits for it with a 5 s virtual timeout;
          the parent must time out at exactly +5 s virtual and exit 0.
deadlock: parent and child each wait forever for a message the other never sends.
"""
import json
import multiprocessing as mp
import os
import queue
import signal
import sys
import time


def child(q, mode):
    if mode == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    q.get()  # deadlock: nobody ever puts


if __name__ == "__main__":
    mode = sys.argv[1]
    ctx = mp.get_context("spawn")
    q, back = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=child, args=(q, mode))
    p.start()
    t0 = time.perf_counter()
    if mode == "crash":
        try:
            back.get(timeout=5)
        except queue.Empty:
            pass
        p.join()
        print(json.dumps({"waited_s": time.perf_counter() - t0, "child_exit": p.exitcode}))
    else:
        back.get()
