"""The SSE parser and the asyncio HTTP/1.1 client, the latter against a real socket server that
frames its replies in the awkward ways real servers may (chunks split mid-line, CRLF, trailers)."""

from __future__ import annotations

import asyncio
import json

import pytest

from revati.bench.client import ClientConfig, run_benchmark
from revati.bench.http import BaseUrl, open_request
from revati.bench.sse import SSEParser
from revati.errors import BadInput
from revati.workload import WorkloadRequest


def test_sse_parser_handles_splits_crlf_comments_and_multiline():
    p = SSEParser()
    out = []
    stream = b': ping\r\n\r\ndata: {"a": 1}\r\n\r\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n'
    for i in range(len(stream)):          # one byte at a time: the worst split
        out += p.feed(stream[i:i + 1])
    assert out == ['{"a": 1}', "line1\nline2", "[DONE]"]
    p2 = SSEParser()
    assert p2.feed("data: é".encode()[:-1]) == []   # a UTF-8 character split across reads
    assert p2.feed("data: é".encode()[-1:] + b"\n\n") == ["é"]
    p3 = SSEParser()
    assert p3.feed(b"data: tail") == [] and p3.flush() == ["tail"]


def test_base_url_parsing():
    u = BaseUrl.parse("http://127.0.0.1:8000/api/")
    assert (u.host, u.port, u.prefix, u.authority) == ("127.0.0.1", 8000, "/api", "127.0.0.1:8000")
    assert BaseUrl.parse("https://example.org").port == 443
    with pytest.raises(BadInput):
        BaseUrl.parse("ftp://x")


def _sse_body(n_tokens: int, prompt_tokens: int) -> list[bytes]:
    events = [f'data: {json.dumps({"choices": [{"index": 0, "text": f" t{i}"}]})}\n\n' for i in range(n_tokens)]
    events.append('data: ' + json.dumps({"choices": [{"index": 0, "text": "", "finish_reason": "length"}],
                                          "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n_tokens}}) + "\n\n")
    events.append("data: [DONE]\n\n")
    return [e.encode() for e in events]


async def _serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _read_request(reader) -> tuple[str, dict]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return lines[0], json.loads(body) if body else {}


def test_streaming_completion_over_chunked_encoding():
    seen = []

    async def handler(reader, writer):
        request_line, body = await _read_request(reader)
        seen.append((request_line, body))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in _sse_body(body["max_tokens"], len(body["prompt"])):
            mid = len(event) // 2            # every event split over two chunks
            for part in (event[:mid], event[mid:]):
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.002)
        writer.write(b"0\r\nx-trailer: 1\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main():
        server, port = await _serve(handler)
        async with server:
            cfg = ClientConfig(f"http://127.0.0.1:{port}", "m")
            reqs = [WorkloadRequest(0, 0.0, 3, 4), WorkloadRequest(1, 0.05, 2, 2)]
            return await run_benchmark(cfg, reqs, [[11, 12, 13], [14, 15]], max_concurrency=1)

    records, duration = asyncio.run(main())
    assert seen[0][0] == "POST /v1/completions HTTP/1.1"
    assert seen[0][1]["ignore_eos"] is True and seen[0][1]["stream"] is True and seen[0][1]["prompt"] == [11, 12, 13]
    r0, r1 = records
    assert r0.success and r1.success, (r0.error, r1.error)
    assert len(r0.token_times_s) == 4 and r0.output_tokens == 4 and r0.prompt_tokens == 3
    assert r1.send_s >= 0.05 and duration >= r1.token_times_s[-1]
    assert all(b > a for a, b in zip(r0.token_times_s, r0.token_times_s[1:]))


def test_errors_are_recorded_not_raised():
    async def handler(reader, writer):
        await _read_request(reader)
        body = b'{"detail": "Unexpected fields in the request: {\'ignore_eos\'}"}'
        writer.write(b"HTTP/1.1 422 Unprocessable Entity\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    async def main():
        server, port = await _serve(handler)
        async with server:
            cfg = ClientConfig(f"http://127.0.0.1:{port}", "m")
            ok, _ = await run_benchmark(cfg, [WorkloadRequest(0, 0.0, 1, 1)], [[5]])
        # nothing listens on the port any more
        down, _ = await run_benchmark(cfg, [WorkloadRequest(0, 0.0, 1, 1)], [[5]])
        return ok[0], down[0]

    rejected, refused = asyncio.run(main())
    assert not rejected.success and "HTTP 422" in rejected.error and "ignore_eos" in rejected.error
    assert not refused.success and "Error" in refused.error


def test_get_with_content_length():
    async def handler(reader, writer):
        await _read_request(reader)
        body = b'{"data": [{"id": "tiny"}]}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    async def main():
        server, port = await _serve(handler)
        async with server:
            resp = await open_request("GET", f"http://127.0.0.1:{port}", "/v1/models")
            try:
                return resp.status, await resp.json()
            finally:
                resp.close()

    status, data = asyncio.run(main())
    assert status == 200 and data["data"][0]["id"] == "tiny"
