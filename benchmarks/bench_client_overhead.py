"""How much CPU revati's benchmark client spends per streamed token.

Under ``revati emulate`` the client runs beside the engine and its host time is real CPU on the
same machine, so its cost per token bounds how fast an emulation can go. This starts a
minimal OpenAI-style SSE server in another process (it streams ``max_tokens`` chunks as fast as
it can, chunked encoding, one event per token, like vLLM) and runs the client against it at a
few concurrencies, reporting tokens/s and the client's CPU microseconds per token.

Usage::

    python benchmarks/bench_client_overhead.py            # prints a table, then JSON
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time

from revati.bench.client import ClientConfig, run_benchmark, wait_until_ready
from revati.workload import WorkloadRequest

SERVER = r'''
import asyncio, json, sys
async def handle(reader, writer):
    head = await reader.readuntil(b"\r\n\r\n")
    length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")]
    body = json.loads(await reader.readexactly(length[0])) if length else {}
    if head.startswith(b"GET"):
        data = b'{"data": [{"id": "m"}]}'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(data) + data)
    else:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        n = body["max_tokens"]
        for i in range(n):
            ev = ("data: " + json.dumps({"choices": [{"index": 0, "text": " tok"}]}) + "\n\n").encode()
            writer.write(b"%x\r\n" % len(ev) + ev + b"\r\n")
            await writer.drain()
        ev = ("data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": n}}) + "\n\ndata: [DONE]\n\n").encode()
        writer.write(b"%x\r\n" % len(ev) + ev + b"\r\n0\r\n\r\n")
    await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
'''


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(base_url: str, num_requests: int, output_tokens: int, concurrency: int) -> dict:
    reqs = [WorkloadRequest(i, 0.0, 8, output_tokens) for i in range(num_requests)]
    prompts = [[11] * 8 for _ in reqs]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    records, _ = asyncio.run(run_benchmark(ClientConfig(base_url, "m"), reqs, prompts, max_concurrency=concurrency))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    tokens = sum(len(r.token_times_s) for r in records if r.success)
    assert tokens == num_requests * output_tokens, "the stub server dropped tokens"
    return {"requests": num_requests, "output_tokens": output_tokens, "concurrency": concurrency,
            "tokens_per_s": round(tokens / wall), "client_cpu_us_per_token": round(cpu / tokens * 1e6, 1)}


def main() -> None:
    port = _port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        if not asyncio.run(wait_until_ready(base, 10, poll_s=0.05)):
            sys.exit("stub server did not start")
        rows = [measure(base, n, t, c) for n, t, c in [(50, 256, 1), (200, 128, 32), (400, 64, 128)]]
    finally:
        server.terminate()
        server.wait()
    print(f"{'requests':>8} {'out tok':>8} {'conc':>5} {'tok/s':>8} {'client CPU us/token':>20}")
    for r in rows:
        print(f"{r['requests']:>8} {r['output_tokens']:>8} {r['concurrency']:>5} {r['tokens_per_s']:>8} "
              f"{r['client_cpu_us_per_token']:>20}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
