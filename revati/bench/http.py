"""A small HTTP/1.1 client on plain asyncio streams, made for streaming benchmark requests.

Why not aiohttp/httpx: the client runs inside ``revati emulate``, where asyncio's loop time and
sleeps are virtual; plain ``asyncio.open_connection`` streams use nothing but the loop's
selector and ordinary sockets, so they behave the same under the virtual loop and outside it.
One connection per request (``Connection: close``), bodies by ``Content-Length``, chunked
transfer encoding, or read to EOF; ``https`` through the standard ``ssl`` module.

Example::

    resp = await open_request("POST", "http://127.0.0.1:8000", "/v1/completions", json_body={...})
    async for piece in resp.iter_body():
        ...
    resp.close()
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import AsyncIterator
from urllib.parse import urlsplit

from revati.errors import BadInput

_MAX_HEADER_BYTES = 64 * 1024
_READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class BaseUrl:
    scheme: str
    host: str
    port: int
    prefix: str     # a path prefix in the base URL, e.g. "/api"

    @classmethod
    def parse(cls, url: str) -> BaseUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput(url, "not an http(s)://HOST[:PORT] URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise BadInput(url, "bad port") from None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


class ProtocolError(Exception):
    """The server's reply is not valid HTTP/1.1 (recorded as the request's error)."""


class HttpResponse:
    def __init__(self, status: int, reason: str, headers: dict[str, str],
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.status = status
        self.reason = reason
        self.headers = headers
        self._reader = reader
        self._writer = writer

    async def iter_body(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (transfer framing removed)."""
        if self.headers.get("transfer-encoding", "").lower().endswith("chunked"):
            async for piece in self._iter_chunked():
                yield piece
            return
        length = self.headers.get("content-length")
        if length is not None:
            left = int(length)
            while left > 0:
                piece = await self._reader.read(min(left, _READ_SIZE))
                if not piece:
                    raise ProtocolError(f"connection closed with {left} body bytes missing")
                left -= len(piece)
                yield piece
            return
        while piece := await self._reader.read(_READ_SIZE):
            yield piece

    async def _iter_chunked(self) -> AsyncIterator[bytes]:
        while True:
            size_line = await self._reader.readline()
            if not size_line:
                raise ProtocolError("connection closed inside a chunked body")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line {size_line!r}") from None
            if size == 0:
                # trailers, then the blank line
                while (line := await self._reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return
            left = size
            while left > 0:
                piece = await self._reader.read(min(left, _READ_SIZE))
                if not piece:
                    raise ProtocolError("connection closed inside a chunk")
                left -= len(piece)
                yield piece
            await self._reader.readexactly(2)  # CRLF after the chunk data

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.iter_body()])

    async def json(self):
        return json.loads(await self.read())

    def close(self) -> None:
        self._writer.close()


async def open_request(
    method: str,
    base: BaseUrl | str,
    path: str,
    json_body: object | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """Send one request and read the status line and headers; the body is read by the caller."""
    base = BaseUrl.parse(base) if isinstance(base, str) else base
    ssl_ctx = ssl.create_default_context() if base.scheme == "https" else None
    reader, writer = await asyncio.open_connection(base.host, base.port, ssl=ssl_ctx, limit=_MAX_HEADER_BYTES)
    try:
        body = b"" if json_body is None else json.dumps(json_body).encode()
        lines = [
            f"{method} {base.prefix}{path} HTTP/1.1",
            f"Host: {base.authority}",
            "User-Agent: revati-bench",
            "Accept: */*",
            "Connection: close",
        ]
        if json_body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"bad status line {status_line!r}")
        if not parts[1].isdigit():
            raise ProtocolError(f"bad status line {status_line!r}")
        status, reason = int(parts[1]), (parts[2].strip() if len(parts) > 2 else "")
        resp_headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise ProtocolError("connection closed inside the headers")
            name, _, value = line.decode("latin-1").partition(":")
            resp_headers[name.strip().lower()] = value.strip()
        return HttpResponse(status, reason, resp_headers, reader, writer)
    except BaseException:
        writer.close()
        raise
