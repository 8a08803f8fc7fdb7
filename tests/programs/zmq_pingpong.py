"""Two emulated processes over ZeroMQ ipc:// sockets (what vLLM's frontend and engine use).

usage: revati emulate --no-host-cpu -- python zmq_pingpong.py DIR [ROUNDS [REPEATS]]
The server sleeps 0.5 s (virtual) before answering each request; the client polls with a 0.2 s
timeout until the answer comes, then checks the answer's stamp. ROUNDS (default 3) request/answer
pairs with one server process, REPEATS (default 1) times, each with a new server process (the
start and exit of processes is where lost wake-ups hid); prints one JSON object.
"""
import json
import multiprocessing as mp
import sys
import time

import zmq


def server(path, n_rounds):
    ctx = zmq.Context()
    rep = ctx.socket(zmq.PULL)
    rep.bind(f"ipc://{path}/req")
    out = ctx.socket(zmq.PUSH)
    out.connect(f"ipc://{path}/resp")
    for _ in range(n_rounds):
        parts = rep.recv_multipart()        # a blocking receive: a virtual wait
        time.sleep(0.5)
        out.send_multipart([parts[0], json.dumps(time.perf_counter()).encode()])
    out.close(linger=1000)
    rep.close()


def client(path, n_rounds, ctx, resp):
    req = ctx.socket(zmq.PUSH)
    req.connect(f"ipc://{path}/req")
    p = mp.get_context("spawn").Process(target=server, args=(path, n_rounds))
    p.start()
    rounds = []
    poller = zmq.Poller()
    poller.register(resp, zmq.POLLIN)
    for i in range(n_rounds):
        t_send = time.perf_counter()
        req.send_multipart([str(i).encode(), b"x"])
        empty_polls = 0
        while not dict(poller.poll(200)):
            empty_polls += 1
        tag, sent_at = resp.recv_multipart()
        rounds.append({"tag": tag.decode(), "send": t_send, "server_sent": json.loads(sent_at),
                       "received": time.perf_counter(), "empty_polls": empty_polls})
    p.join()
    req.close(linger=0)
    return rounds


if __name__ == "__main__":
    path = sys.argv[1]
    n_rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    ctx = zmq.Context()
    resp = ctx.socket(zmq.PULL)
    resp.bind(f"ipc://{path}/resp")
    runs = []
    for _ in range(repeats):
        runs.append(client(path, n_rounds, ctx, resp))
        print(f"repeat {len(runs)} of {repeats} done", file=sys.stderr, flush=True)
    print(json.dumps({"rounds": runs[0], "repeats": [r[-1] for r in runs]}))
