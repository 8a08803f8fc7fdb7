"""TCP and Unix stream sockets between emulated processes: causal stamps and virtual waits.

HTTP between a benchmark client and a serving frontend runs over sockets; the client measures
TTFT and ITL from when bytes arrive, so a chunk sent at virtual time T must not be seen before T
(Note [Causal stamps on channels]). A connection whose two ends are both emulated processes of
this emulation is *framed*: every ``send`` becomes one frame -- a 16-byte header (marker, payload
length, the sender's virtual time) and the payload -- and ``recv`` returns bytes of one frame at
a time, moving the receiver's clock to that frame's time. One send is one frame, so a reader
sees each write at its own time, as it would on a real machine, even when several writes are
already buffered.

Which connections: every emulated process records the TCP ports and Unix socket paths it binds
or connects from in the emulation's registry (a folder named by REVATI_EMU_DIR). A socket is
framed when its peer's address is in the registry; others (the timekeeper's, anything outside
the emulation) pass through untouched. The decision is made once per socket, at its first send
or receive; both ends agree because a TCP client records its port before it connects (see
``_before_connect``).

Blocking reads on framed sockets wait virtually (selectors -> the coordinator), with the
socket's timeout as a virtual deadline. Non-blocking sockets (asyncio) already wait in the
virtual selector.
"""

from __future__ import annotations

import hashlib
import os
import socket as _socket_mod
import struct
import weakref

from revati.shim.vwait import _REAL_SELECT
from revati.shim.patching import patch

EMU_DIR_ENV = "REVATI_EMU_DIR"
_HDR = struct.Struct("<4sIq")
_MARK = b"\xfeRVS"
_HDR_SIZE = _HDR.size
_PASS, _FRAMED = 1, 2


class _Conn:
    __slots__ = ("mode", "remaining", "hdr", "send_left", "send_hdr")

    def __init__(self, mode: int):
        self.mode = mode
        self.remaining = 0        # payload bytes left in the frame being read
        self.hdr = b""            # a partly read header
        self.send_left = 0        # payload bytes of the frame being written not yet sent
        self.send_hdr = b""       # header bytes of that frame not yet sent


def _key_for(addr) -> str | None:
    if isinstance(addr, tuple) and len(addr) >= 2 and isinstance(addr[1], int):
        return f"tcp-{addr[1]}"
    if isinstance(addr, (str, bytes)) and addr:
        path = os.fsdecode(addr)
        if path.startswith("\0"):
            path = "@" + path[1:]
        return "unix-" + hashlib.sha1(path.encode()).hexdigest()[:20]
    return None


def install(clock, waits) -> None:
    emu_dir = os.environ.get(EMU_DIR_ENV)
    if not emu_dir:
        return
    registry = os.path.join(emu_dir, "endpoints")
    os.makedirs(registry, exist_ok=True)
    state: "weakref.WeakKeyDictionary[_socket_mod.socket, _Conn]" = weakref.WeakKeyDictionary()
    base = _socket_mod.socket
    c_send, c_recv, c_recv_into = base.__mro__[1].send, base.__mro__[1].recv, base.__mro__[1].recv_into
    c_bind, c_connect, c_connect_ex = base.__mro__[1].bind, base.__mro__[1].connect, base.__mro__[1].connect_ex
    stream_families = {_socket_mod.AF_INET, _socket_mod.AF_INET6, _socket_mod.AF_UNIX}

    def _register(addr) -> None:
        key = _key_for(addr)
        if key:
            try:
                with open(os.path.join(registry, key), "w"):
                    pass
            except OSError:
                pass

    def _conn(sock) -> _Conn:
        st = state.get(sock)
        if st is None:
            mode = _PASS
            try:
                if sock.family in stream_families and sock.type == _socket_mod.SOCK_STREAM:
                    key = _key_for(sock.getpeername())
                    if key and os.path.exists(os.path.join(registry, key)):
                        mode = _FRAMED
            except OSError:
                return _Conn(_PASS)  # not connected yet: decide later
            st = state[sock] = _Conn(mode)
        return st

    def bind(self, address):
        c_bind(self, address)
        try:
            _register(self.getsockname())
        except OSError:
            pass

    def _after_connect(self):
        try:
            _register(self.getsockname())
        except OSError:
            pass

    def _before_connect(self):
        # The peer decides at its first read whether the connection is framed, by looking this
        # end's port up in the registry -- and may read as soon as the connection exists. So a
        # TCP client takes its port (bind to port 0) and registers it before connecting:
        # registered only after connect, a server's early first read could find it missing and
        # pass the client's frames through (a flaky "unframed data" at the client).
        if self.family in (_socket_mod.AF_INET, _socket_mod.AF_INET6) and self.type == _socket_mod.SOCK_STREAM:
            try:
                if self.getsockname()[1] == 0:
                    c_bind(self, ("0.0.0.0", 0) if self.family == _socket_mod.AF_INET else ("::", 0))
                _register(self.getsockname())
            except OSError:
                pass

    def connect(self, address):
        _before_connect(self)
        try:
            c_connect(self, address)
        finally:
            _after_connect(self)

    def connect_ex(self, address):
        _before_connect(self)
        rc = c_connect_ex(self, address)
        _after_connect(self)
        return rc

    def _wait_readable(self) -> None:
        timeout = self.gettimeout()
        if timeout == 0.0:
            return
        ready = waits.wait_fds(lambda: _select_readable(self), [(self.fileno(), 1)], timeout)
        if not ready:
            raise _socket_mod.timeout("timed out")

    def send(self, data, flags=0):
        st = _conn(self)
        if st.mode != _FRAMED or flags:
            return c_send(self, data, flags)
        view = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else memoryview(data)
        if st.send_left == 0:
            if not len(view):
                return 0
            st.send_left = len(view)
            st.send_hdr = _HDR.pack(_MARK, len(view), clock.now())
        if st.send_hdr:
            n = c_send(self, st.send_hdr + bytes(view[:st.send_left]))
            sent_hdr = min(n, len(st.send_hdr))
            st.send_hdr = st.send_hdr[sent_hdr:]
            payload = n - sent_hdr
        else:
            payload = c_send(self, view[:st.send_left])
        st.send_left -= payload
        return payload

    def sendall(self, data, flags=0):
        st = _conn(self)
        if st.mode != _FRAMED or flags:
            return base.__mro__[1].sendall(self, data, flags)
        view = memoryview(data).cast("B")
        while len(view):
            try:
                n = send(self, view)
            except BlockingIOError:
                waits.wait_fds(lambda: _select_writable(self), [(self.fileno(), 4)], self.gettimeout())
                continue
            view = view[n:]
        return None

    def _read_header(self, st: _Conn) -> bool:
        """Complete the frame header; False at a clean end of stream."""
        while len(st.hdr) < _HDR_SIZE:
            if self.gettimeout() != 0.0:
                _wait_readable(self)
            chunk = c_recv(self, _HDR_SIZE - len(st.hdr))
            if not chunk:
                if st.hdr:
                    raise ConnectionError("revati: connection closed inside a frame header")
                return False
            st.hdr += chunk
        mark, length, stamp = _HDR.unpack(st.hdr)
        st.hdr = b""
        if mark != _MARK:
            raise ConnectionError("revati: unframed data on a connection between emulated processes")
        st.remaining = length
        if stamp > clock.now():
            clock.advance_to(stamp)
        return True

    def recv(self, bufsize, flags=0):
        st = _conn(self)
        if st.mode != _FRAMED or flags:
            return c_recv(self, bufsize, flags)
        if bufsize <= 0:
            return b""
        if st.remaining == 0 and not _read_header(self, st):
            return b""
        if self.gettimeout() != 0.0:
            _wait_readable(self)
        data = c_recv(self, min(bufsize, st.remaining))
        st.remaining -= len(data)
        return data

    def recv_into(self, buffer, nbytes=0, flags=0):
        st = _conn(self)
        if st.mode != _FRAMED or flags:
            return c_recv_into(self, buffer, nbytes, flags)
        data = recv(self, nbytes or len(buffer))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)

    for name, fn in (("bind", bind), ("connect", connect), ("connect_ex", connect_ex), ("send", send),
                     ("sendall", sendall), ("recv", recv), ("recv_into", recv_into)):
        patch(base, name, fn)


def _select_readable(sock) -> bool:
    try:
        return bool(_REAL_SELECT([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True  # closed or broken: let the read report it


def _select_writable(sock) -> bool:
    try:
        return bool(_REAL_SELECT([], [sock], [], 0)[1])
    except (OSError, ValueError):
        return True
