"""One 128 MiB all-reduce per rank under torchrun; prints each rank's view as one JSON line.

usage: revati emulate --num-gpus 2 -- python -m torch.distributed.run --nproc-per-node 2 \\
           allreduce_torchrun.py
Each rank times the all-reduce (launch to synchronize) on its virtual clock. On a GPU box the
ranks agree (the collective ends for both at the later arrival plus its duration); so must the
emulation, whatever torchrun's monitor loop does meanwhile and whichever rank the OS runs first.
"""
import json
import os
import time

import torch
import torch.distributed as dist

rank = int(os.environ["RANK"])
torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
dist.init_process_group("nccl")
x = torch.empty(64 * 1024 * 1024, dtype=torch.float16, device="cuda")  # 128 MiB
dist.barrier()
torch.cuda.synchronize()
t0 = time.perf_counter()
dist.all_reduce(x)
torch.cuda.synchronize()
t1 = time.perf_counter()
# One write of one line: both ranks share torchrun's stdout.
os.write(1, (json.dumps({"rank": rank, "all_reduce_ms": (t1 - t0) * 1e3, "t0": t0, "t1": t1}) + "\n").encode())
dist.destroy_process_group()
