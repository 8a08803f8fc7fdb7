"""The timekeeper's wire format: length-prefixed frames, one message family, allow-listed kinds.

A frame is a 4-byte big-endian body length followed by the body. Every body after the first
is ``pickle.dumps(tuple)`` whose element 0 names the kind; each direction has its own allow-list
of kinds with the type of every field (``C2S`` client to server, ``S2C`` server to client), and
``decode`` rejects anything else. Pickle of small tuples is the fastest encoding CPython offers
for these messages; it is safe here because nothing is unpickled before the peer has proved it
knows the emulation's token (see ``handshake_body``), and the socket is private (a Unix socket
in a 0700 directory, or TCP with that token).

The first frame a client sends is the handshake: ``MAGIC + u16 token length + token + pickled
("register", ...)`` (or ``("doorbell", id)`` for a participant's second connection). The server
compares the token in constant time before unpickling the rest.

Every server message carries the current global virtual time as field 1.
"""

from __future__ import annotations

import os
import pickle
import secrets
import struct
from dataclasses import dataclass
from typing import Any, Iterator

from revati.errors import BadInput

ENV_ADDRESS = "REVATI_COORD_ADDRESS"
ENV_TOKEN = "REVATI_COORD_TOKEN"
ENV_TICKET = "REVATI_COORD_TICKET"

MAGIC = b"RVTK\x01"
MAX_FRAME_BYTES = 64 << 20
_HEADER = struct.Struct(">I")
_TOKEN_LEN = struct.Struct(">H")
_PROTOCOL = pickle.HIGHEST_PROTOCOL

# Flags of a "state" message (bit set).
FLAG_IO = 1  # some waiting thread waits on I/O (or an un-instrumented call): probe before advancing
FLAG_STALLED = 2  # blocked because the stall check found every other thread asleep


class _OptInt:
    """Field type marker: an int or None."""


class _Any:
    """Field type marker: anything pickle produced (payloads, group keys, reports)."""


def _check_field(value: Any, kind: type) -> bool:
    if kind is _Any:
        return True
    if kind is _OptInt:
        return value is None or (type(value) is int)
    if kind is int:
        return type(value) is int  # bool is not an int here: flags and counts stay distinct
    if kind is bool:
        return type(value) is bool
    if kind is float:
        return type(value) in (int, float)
    return isinstance(value, kind)


# kind -> field types after the kind. Client to server.
C2S: dict[str, tuple[type, ...]] = {
    # name, pid, ppid, start_lvt_ns, ticket, role ("participant" | "control")
    "register": (str, int, int, _OptInt, (str, type(None)), str),
    # participant id: this connection is that participant's doorbell (handshake only). The
    # server sends stall checks there, so an idle client thread can wait on it at no cost
    # while program threads read the main connection themselves.
    "doorbell": (int,),
    # ack, blocked, deadline_ns, flags, lvt_ns
    "state": (int, bool, _OptInt, int, int),
    # ack, group_key, seq, rank, world_size, arrival_ns, cost_ns, payload, blocked, deadline_ns,
    # flags, lvt_ns -- an arrival at a collective together with the sender's new state
    "coll": (int, _Any, int, int, int, int, int, (bytes, type(None)), bool, _OptInt, int, int),
    # group_key, rank, world_size -- declares membership so an exit fails the group's collectives
    "join": (_Any, int, int),
    # round, ack, still_blocked, lvt_ns
    "probe_reply": (int, int, bool, int),
    # ticket, timeout_s -- a child process is about to start and will register with the ticket
    "spawn": (str, float),
    # ticket, pid
    "spawn_pid": (str, int),
    # ticket
    "spawn_cancel": (str,),
    "bye": (),
}

# Server to client; field 0 after the kind is always the GVT.
S2C: dict[str, tuple[type, ...]] = {
    # gvt, participant_id, start_lvt_ns
    "welcome": (int, int, int),
    # gvt, seq, granted_ns: wake every wait whose deadline <= granted_ns
    "wake": (int, int, int),
    # gvt, seq, group_key, coll_seq, rank, completion_ns, payloads (by rank)
    "coll_done": (int, int, _Any, int, int, int, list),
    # gvt, seq, group_key, coll_seq, rank, missing_ranks, reason
    "coll_fail": (int, int, _Any, int, int, list, str),
    "gvt": (int,),
    # gvt, round
    "probe": (int, int),
    "check": (int,),
    # gvt, report (plain data, see core.Timekeeper.report)
    "deadlock": (int, dict),
    # gvt, reason
    "refused": (int, str),
}


class ProtocolError(Exception):
    """A peer sent something outside the allow-list; the connection is dropped."""


def frame(body: bytes) -> bytes:
    return _HEADER.pack(len(body)) + body


def encode(msg: tuple) -> bytes:
    body = pickle.dumps(msg, _PROTOCOL)
    return _HEADER.pack(len(body)) + body


def decode(body: bytes, allowed: dict[str, tuple[type, ...]]) -> tuple:
    try:
        msg = pickle.loads(body)
    except Exception as exc:
        raise ProtocolError(f"undecodable frame: {exc!r}") from None
    if type(msg) is not tuple or not msg or type(msg[0]) is not str:
        raise ProtocolError(f"not a message tuple: {type(msg).__name__}")
    fields = allowed.get(msg[0])
    if fields is None:
        raise ProtocolError(f"kind {msg[0]!r} is not allowed")
    if len(msg) != len(fields) + 1:
        raise ProtocolError(f"{msg[0]!r}: expected {len(fields)} fields, got {len(msg) - 1}")
    for value, kind in zip(msg[1:], fields):
        if not _check_field(value, kind):
            raise ProtocolError(f"{msg[0]!r}: bad field {value!r}")
    return msg


def handshake_body(token: str, register: tuple) -> bytes:
    raw = token.encode()
    return MAGIC + _TOKEN_LEN.pack(len(raw)) + raw + pickle.dumps(register, _PROTOCOL)


def split_handshake(body: bytes) -> tuple[bytes, bytes]:
    """(token, rest) of a handshake body, without unpickling anything."""
    if not body.startswith(MAGIC) or len(body) < len(MAGIC) + _TOKEN_LEN.size:
        raise ProtocolError("not a revati timekeeper handshake")
    (n,) = _TOKEN_LEN.unpack_from(body, len(MAGIC))
    start = len(MAGIC) + _TOKEN_LEN.size
    if len(body) < start + n:
        raise ProtocolError("truncated handshake")
    return body[start:start + n], body[start + n:]


class FrameReader:
    """Accumulates bytes from a stream socket and yields complete frame bodies."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        buf = self._buf
        buf += data
        pos = self._pos
        end = len(buf)
        while end - pos >= 4:
            (n,) = _HEADER.unpack_from(buf, pos)
            if n > MAX_FRAME_BYTES:
                raise ProtocolError(f"frame of {n} bytes exceeds {MAX_FRAME_BYTES}")
            if end - pos - 4 < n:
                break
            yield bytes(buf[pos + 4:pos + 4 + n])
            pos += 4 + n
        if pos == end:
            buf.clear()
            pos = 0
        elif pos > 65536:
            del buf[:pos]
            pos = 0
        self._pos = pos


def new_token() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Address:
    """Where the timekeeper listens: a Unix socket path, or TCP host and port."""

    kind: str  # "unix" | "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"tcp:{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> "Address":
        """``unix:PATH``, a path containing ``/``, ``tcp:HOST:PORT`` or ``HOST:PORT``."""
        if not text:
            raise BadInput(text, "empty timekeeper address")
        if text.startswith("unix:"):
            return cls("unix", path=text[5:])
        if "/" in text:
            return cls("unix", path=text)
        rest = text[4:] if text.startswith("tcp:") else text
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise BadInput(text, "timekeeper address is neither a socket path nor HOST:PORT")
        return cls("tcp", host=host.strip("[]"), port=int(port))


def address_from_env(environ: dict[str, str] | None = None) -> tuple[Address, str, str | None] | None:
    """(address, token, ticket) from the environment, or None when no timekeeper is set."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_ADDRESS)
    if not text:
        return None
    return Address.parse(text), env.get(ENV_TOKEN, ""), env.get(ENV_TICKET) or None
