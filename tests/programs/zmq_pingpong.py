"""Two emulated processes over ZeroMQ ipc:// sockets (what vLLM's frontend and engine use).

usage: revati emulate --no-host-cpu -- python zmq_pingpong.py DIR
The server sleeps 0.5 s (virtual) before answering each request; the client polls with a 0.2 s
timeout until the answer comes, then checks the answer's stamp. Prints one JSON object.
"""
import json
import multiprocessing as mp
import sys
import time

import zmq


def server(path):
    ctx = zmq.Context()
    rep = ctx.socket(zmq.PULL)
    rep.bind(f"ipc://{path}/req")
    out = ctx.socket(zmq.PUSH)
    out.connect(f"ipc://{path}/resp")
    for _ in range(3):
        parts = rep.recv_multipart()        # a blocking receive: a virtual wait
        time.sleep(0.5)
        out.send_multipart([parts[0], json.dumps(time.perf_counter()).encode()])
    out.close(linger=1000)
    rep.close()


if __name__ == "__main__":
    path = sys.argv[1]
    ctx = zmq.Context()
    resp = ctx.socket(zmq.PULL)
    resp.bind(f"ipc://{path}/resp")
    req = ctx.socket(zmq.PUSH)
    req.connect(f"ipc://{path}/req")
    p = mp.get_context("spawn").Process(target=server, args=(path,))
    p.start()
    rounds = []
    poller = zmq.Poller()
    poller.register(resp, zmq.POLLIN)
    for i in range(3):
        t_send = time.perf_counter()
        req.send_multipart([str(i).encode(), b"x"])
        empty_polls = 0
        while not dict(poller.poll(200)):
            empty_polls += 1
        tag, sent_at = resp.recv_multipart()
        rounds.append({"tag": tag.decode(), "send": t_send, "server_sent": json.loads(sent_at),
                       "received": time.perf_counter(), "empty_polls": empty_polls})
    p.join()
    print(json.dumps({"rounds": rounds}))
