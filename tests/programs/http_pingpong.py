"""An HTTP server and an asyncio streaming client in two emulated processes.

usage: revati emulate --no-host-cpu -- python http_pingpong.py
The server (http.server, blocking sockets) streams 3 chunks 0.25 s apart (virtual) per request;
the client (asyncio streams, like revati's benchmark client) reads each chunk and notes when it
arrived. Prints one JSON object: per chunk, the server's send time and the client's receive time.
"""
import asyncio
import http.server
import json
import multiprocessing as mp
import socket
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(3):
            time.sleep(0.25)
            body = json.dumps({"i": i, "sent": time.perf_counter()}).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args):
        pass


def serve(port_q):
    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    port_q.put(srv.server_address[1])
    srv.handle_request()


async def client(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.perf_counter()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    chunks = []
    while True:
        line = await reader.readline()
        if line.startswith(b"{"):
            chunks.append({**json.loads(line), "received": time.perf_counter()})
        if line == b"0\r\n":
            break
    writer.close()
    return {"t0": t0, "chunks": chunks}


if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=serve, args=(q,))
    p.start()
    port = q.get()
    time.sleep(0.1)
    out = asyncio.run(client(port))
    p.join()
    print(json.dumps(out))
