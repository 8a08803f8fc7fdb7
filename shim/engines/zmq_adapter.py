"""ZeroMQ between emulated processes: virtual waits and causal stamps.

Serving engines talk over ZeroMQ (vLLM: the frontend and the engine core over ``ipc://``
sockets, workers through notification sockets). libzmq blocks inside C, outside revati's
clocks, so:

- a blocking receive, ``Socket.poll``, ``Poller.poll`` and ``zmq.select`` first check readiness
  without blocking (``zmq_poll`` with a zero timeout) and otherwise wait virtually on the
  sockets' ``ZMQ_FD`` descriptors through the coordinator, with the timeout (``RCVTIMEO`` or
  the poll's) as a virtual deadline -- idle sockets cost no wall time;
- every message carries its sender's virtual send time in-band (Note [Causal stamps on
  channels]): 12 bytes (a marker and the int64 time) before the first frame; the receiver strips
  them and its clock jumps to at least that time. A message without the marker (a peer outside
  the emulation) passes unchanged.

``zmq.asyncio`` sockets read through the same methods of their shadow socket, and wait in the
asyncio loop's selector, which is virtual already.
"""

from __future__ import annotations

import os
import struct
import weakref
from typing import Any
from revati.shim.patching import patch

_MARK = b"\xffRVT"
_STAMP = struct.Struct("<4sq")
_PREFIX = _STAMP.size
_STATE: "weakref.WeakKeyDictionary[Any, _Framing]" = weakref.WeakKeyDictionary()
# Real time a sender gives libzmq's I/O threads to deliver before it may report itself blocked
# (Waits.settle): the timekeeper's probe of the receiver must see the message.
SETTLE_S = 0.0005
RECONNECT_IVL_MS = 1


class _Framing:
    """Where the stamp goes in a socket's multipart messages.

    The stamp rides on the first *application* frame: a ROUTER's first frame is the peer's
    identity (added on receive, consumed on send), and REQ/REP envelopes put empty delimiter
    frames first, which the peer checks are empty. So, in both directions, the first frame of a
    ROUTER message and empty frames are skipped; the first non-empty frame carries the stamp.
    """

    __slots__ = ("router", "send_pending", "send_index", "recv_pending", "recv_index")

    def __init__(self, router: bool):
        self.router = router
        self.send_pending = True   # no stamp placed yet in the outgoing message
        self.send_index = 0        # frames of the outgoing message so far
        self.recv_pending = True
        self.recv_index = 0


# ``virtual_poll(items, timeout_ms, also_ready=None)``: the adapted zmq_poll, once installed
# (revati/shim/engines/vllm/shm_queue.py waits through it with ``also_ready``).
virtual_poll = None


def _framing(sock, zmq) -> _Framing:
    st = _STATE.get(sock)
    if st is None:
        st = _STATE[sock] = _Framing(sock.getsockopt(zmq.TYPE) == zmq.ROUTER)
    return st


def install(zmq) -> None:
    from revati.shim import runtime, vtime

    waits = vtime._STATE.get("waits")
    if waits is None or getattr(zmq, "_revati_adapted", False):
        return
    zmq._revati_adapted = True
    clock = runtime.get().clock
    Socket = zmq.sugar.socket.Socket
    Frame = zmq.Frame
    SNDMORE, NOBLOCK, POLLIN, POLLOUT = zmq.SNDMORE, zmq.NOBLOCK, zmq.POLLIN, zmq.POLLOUT
    real_send, real_recv = Socket.send, Socket.recv
    real_zmq_poll = zmq.zmq_poll

    def _fd_of(item) -> int:
        if isinstance(item, Socket):
            return item.getsockopt(zmq.FD)
        return item if isinstance(item, int) else item.fileno()

    def _virtual_poll(items: list[tuple[Any, int]], timeout_ms: float | None,
                      also_ready: Any = None) -> list[tuple[Any, int]]:
        """zmq_poll semantics (timeout in ms, None or <0 = forever) on the virtual clock.
        ``also_ready``: see Coordinator.wait_io."""
        ready = real_zmq_poll(items, 0)
        if ready or (timeout_ms is not None and 0 <= timeout_ms <= 0):
            waits.polled()
            return ready
        deadline = None if timeout_ms is None or timeout_ms < 0 else waits.deadline(timeout_ms / 1000.0)
        rfds = [_fd_of(s) for s, ev in items if isinstance(s, Socket) or ev & POLLIN]
        wfds = [_fd_of(s) for s, ev in items if not isinstance(s, Socket) and ev & POLLOUT]
        # The probe that finds ``also_ready()`` true also wakes this thread through a pipe among
        # the descriptors it waits on: the data may be there while no descriptor ever signals.
        pipe = os.pipe() if also_ready is not None else None
        ready_now = None
        if pipe is not None:
            os.set_blocking(pipe[1], False)
            rfds.append(pipe[0])

            def ready_now() -> bool:
                if not also_ready():
                    return False
                try:
                    os.write(pipe[1], b"x")
                except OSError:
                    pass
                return True
        try:
            while True:
                res = waits.coord.wait_io(rfds, wfds, deadline, "zmq", also_ready=ready_now)
                waits._after_wake(res.granted_ns)
                ready = real_zmq_poll(items, 0)
                if ready or res.granted_ns is not None or (pipe is not None and also_ready()):
                    return ready
        finally:
            if pipe is not None:
                os.close(pipe[0])
                os.close(pipe[1])

    def send(self, data, flags=0, copy=True, track=False, routing_id=None, group=None):
        waits.settle(SETTLE_S)
        st = _framing(self, zmq)
        if st.send_pending and not (st.router and st.send_index == 0):
            raw = data.bytes if isinstance(data, Frame) else (
                data.encode() if isinstance(data, str) else bytes(data))
            if raw:
                data = _STAMP.pack(_MARK, clock.now()) + raw
                st.send_pending = False
        if flags & SNDMORE:
            st.send_index += 1
        else:
            st.send_pending, st.send_index = True, 0
        kwargs = {}
        if routing_id is not None:
            kwargs["routing_id"] = routing_id
        if group is not None:
            kwargs["group"] = group
        return real_send(self, data, flags, copy=copy, track=track, **kwargs)

    def recv(self, flags=0, copy=True, track=False):
        if not flags & NOBLOCK:
            timeout = self.getsockopt(zmq.RCVTIMEO)
            if not _virtual_poll([(self, POLLIN)], None if timeout < 0 else timeout):
                raise zmq.Again()
            flags |= NOBLOCK
        msg = real_recv(self, flags, copy=copy, track=track)
        st = _framing(self, zmq)
        more = msg.more if isinstance(msg, Frame) else self.getsockopt(zmq.RCVMORE)
        if st.recv_pending and not (st.router and st.recv_index == 0):
            raw = msg.buffer if isinstance(msg, Frame) else msg
            if len(raw):
                st.recv_pending = False
                if len(raw) >= _PREFIX and bytes(raw[:4]) == _MARK:
                    stamp = _STAMP.unpack_from(raw, 0)[1]
                    if stamp > clock.now():
                        clock.advance_to(stamp)
                    msg = Frame(bytes(raw[_PREFIX:])) if isinstance(msg, Frame) else raw[_PREFIX:]
        if more:
            st.recv_index += 1
        else:
            st.recv_pending, st.recv_index = True, 0
        return msg

    def poll(self, timeout=None, flags=POLLIN):
        if self.closed:
            raise zmq.ZMQError(zmq.ENOTSUP)
        ready = _virtual_poll([(self, flags)], timeout)
        return ready[0][1] if ready else 0

    class Poller(zmq.Poller):
        def poll(self, timeout=None):
            if timeout is None or timeout < 0:
                timeout = None
            return _virtual_poll(self.sockets, timeout)

    def select(rlist, wlist, xlist, timeout=None):
        items = [(s, POLLIN) for s in rlist] + [(s, POLLOUT) for s in wlist] + [(s, zmq.POLLERR) for s in xlist]
        ready = dict(_virtual_poll(items, None if timeout is None else timeout * 1000.0))
        return ([s for s in rlist if ready.get(s, 0) & POLLIN], [s for s in wlist if ready.get(s, 0) & POLLOUT],
                [s for s in xlist if ready.get(s, 0) & zmq.POLLERR])

    real_socket = zmq.Context.socket

    def socket(self, socket_type, socket_class=None, **kwargs):
        sock = real_socket(self, socket_type, socket_class, **kwargs) if socket_class else \
            real_socket(self, socket_type, **kwargs)
        # libzmq retries a connect to a peer that is not bound yet every RECONNECT_IVL of real
        # time (100 ms by default); meanwhile the receiver looks idle and other processes'
        # virtual timeouts are granted. A short interval keeps that real-time window small.
        try:
            sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
        except zmq.ZMQError:
            pass
        return sock

    global virtual_poll
    virtual_poll = _virtual_poll
    patch(zmq.Context, "socket", socket)
    patch(Socket, "send", send)
    patch(Socket, "recv", recv)
    patch(Socket, "poll", poll)
    patch(zmq, "Poller", Poller)
    patch(zmq.sugar.poll, "Poller", Poller)
    patch(zmq, "select", select)
    patch(zmq.sugar.poll, "select", select)
