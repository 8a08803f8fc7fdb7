"""Two processes ping-pong over multiprocessing queues; the parent runs 1 s ahead each round.

usage: revati emulate --no-host-cpu -- python causal_queues.py fork|spawn
Prints the (send, receive) virtual times of each round-trip as the child saw them.
"""
import json
import multiprocessing as mp
import sys
import time
def child(q_in, q_out):
    for _ in range(3):
        t_send = q_in.get()
        q_out.put((t_send, time.perf_counter()))
if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[1])
    a, b = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=child, args=(a, b)); p.start()
    res = []
    for i in range(3):
        time.sleep(1.0)                      # parent ahead of the child by 1 s each round
        a.put(time.perf_counter())
        res.append(b.get())
    p.join()
    print(json.dumps({"pairs": res, "ok": all(r >= s for s, r in res)}))
