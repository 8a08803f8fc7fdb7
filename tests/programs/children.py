"""A program that starts a forked and a spawned child; each reports what it sees of CUDA."""
import json
import multiprocessing as mp
import os
import sys
import time


def child(q):
    import torch

    t = torch.empty(2, device="cuda")
    q.put({"pid": os.getpid(), "cuda": torch.cuda.is_available(), "type": type(t).__name__,
           "name": torch.cuda.get_device_name()})


if __name__ == "__main__":
    import torch

    out = {"parent": torch.cuda.get_device_name()}
    for method in ("fork", "spawn"):
        ctx = mp.get_context(method)
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        out[method] = q.get()
        p.join()
    print(json.dumps(out))
    if len(sys.argv) > 1:
        raise ValueError("boom from the program")
