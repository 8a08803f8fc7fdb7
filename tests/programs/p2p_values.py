"""Small tensors that carry values cross processes: a send/recv and an all-reduce under torchrun.

usage: revati emulate --num-gpus 2 -- python -m torch.distributed.run --nproc-per-node 2 p2p_values.py
SGLang's pipeline stages send a size tensor before each object; the receiver reads its value to
size the next receive. Each rank prints one JSON line with what it received.
"""
import json
import os

import torch
import torch.distributed as dist

rank = int(os.environ["RANK"])
torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
dist.init_process_group("nccl")
size = torch.tensor([495], dtype=torch.long, device="cuda") if rank == 0 else torch.empty(1, dtype=torch.long, device="cuda")
if rank == 0:
    dist.send(size, dst=1)
else:
    dist.recv(size, src=0)
total = torch.tensor([rank + 1], dtype=torch.int32, device="cuda")
dist.all_reduce(total)
os.write(1, (json.dumps({"rank": rank, "size": size.item(), "total": total.item()}) + "\n").encode())
dist.destroy_process_group()
