"""The socket half of a ``Coordinator``: sending, reading, blocking, stall checks and fork.

``CoordinatorIO`` is the base class of ``revati.shim.coord.client.Coordinator``. It owns the
connection to the timekeeper, the lock that guards the pure ``ClientCore`` (``self._core``) and
every send, the pump lock (held by the one thread reading the socket), the reader thread, the
real blocking of the waits that block inside the Coordinator, and what happens to all of these
across ``fork()``. Every method that changes the core calls ``_flush()`` before it releases the
lock: that sends what the core queued, in order, and kicks the reader thread when the core
asks. The threading rules are in the ``client`` module docstring.

This module uses the real ``time.sleep``, ``select.poll`` and ``_thread`` primitives of
revati/shim/real.py, which ``revati.shim`` imports before any patch.
"""

from __future__ import annotations

import os
import select as _select_module
import socket
from typing import Any, Callable

from revati.errors import TimekeeperLost
from revati.shim import real
from revati.shim.coord import procstat
from revati.shim.coord.client_core import READY, WAITING, ClientCore, ThreadInfo, Wait
from revati.shim.coord.wire import S2C, Address, FrameReader, ProtocolError, decode, encode, frame, \
    handshake_body

# The real primitives, before any shim patches them (revati/shim/real.py).
_real_sleep = real.sleep
_real_poll = real.select_poll
_POLLIN = (_select_module.POLLIN | _select_module.POLLHUP | _select_module.POLLERR
           | _select_module.POLLNVAL)
_POLLOUT = _select_module.POLLOUT | _select_module.POLLERR | _select_module.POLLNVAL
_allocate_lock = real.allocate_lock
_get_ident = real.get_ident
_get_native_id = real.get_native_id
_thread_time_ns = real.thread_time_ns
_os_read = real.os_read
_os_write = real.os_write
_MSG_DONTWAIT = socket.MSG_DONTWAIT

CONNECT_TIMEOUT_S = 30.0
FORK_SPAWN_TIMEOUT_S = 30.0
STALL_SAMPLE_GAP_S = 0.001
COLD_POLL_S = 0.1  # how often an idle reader thread looks for messages to a running process
RECV_BYTES = 1 << 16


class CoordinatorIO:
    """See the module docstring."""

    def __init__(self) -> None:
        self._lock = _allocate_lock()  # guards self._core and every send
        self._pump_lock = _allocate_lock()  # held by the one thread reading the socket
        self._core = ClientCore(native_id_fn=_get_native_id)
        self._sock: socket.socket | None = None
        self._frames = FrameReader()
        self._ctl: tuple[int, int] | None = None  # pipe that kicks the reader thread
        self._address: Address | None = None
        self._closed = False
        self._reader_ident: int | None = None
        self._reader_cpu_ns = 0
        self._fork_ticket: str | None = None
        self._follow_fork = True
        # Called once (under the lock, from the thread that noticed) when the timekeeper goes
        # away unannounced: no deadlock notice, no close() of ours. See Note [No orphans].
        self.on_lost: Callable[[TimekeeperLost], None] | None = None

    # -- sending (hold self._lock) --------------------------------------------------------

    def _flush(self) -> None:
        """Send what the core queued; kick the reader thread if the core asked."""
        core = self._core
        if core.outbox:
            msgs = core.take()
            sock = self._sock
            if sock is not None:
                for msg in msgs:
                    if core.failure is not None:
                        break
                    try:
                        sock.sendall(encode(msg))
                    except OSError as exc:
                        core.fail_all(TimekeeperLost(self._address, f"send failed: {exc}"))
        if core.kick_wanted:
            core.kick_wanted = False
            self._kick()

    def _kick(self) -> None:
        if self._ctl is not None:
            try:
                _os_write(self._ctl[1], b"k")
            except OSError:
                pass  # full: a kick is pending anyway

    # -- blocking ---------------------------------------------------------------------------

    def _own_wait(self, w: Wait, rfds: list[int] = (), wfds: list[int] = ()):
        """Block the calling thread until ``w`` is woken or a descriptor is ready.

        Reads the socket itself if nobody else does; otherwise waits to be woken.
        Returns (readable, writable) descriptors.
        """
        if self._pump_lock.acquire(False):
            try:
                return self._pump_until(w, rfds, wfds)
            finally:
                self._pump_lock.release()
                if self._core.hot_waits or self._core.stalled:
                    self._kick()  # the reader takes over the main connection
        return self._woken_wait(w, rfds, wfds)

    def _pump_until(self, w: Wait, rfds, wfds):
        sock = self._sock
        if sock is None:
            return [], []
        # Another thread of this process may end the wait too (wake_due writes the thread's wake
        # pipe): the pipe exists before the status is read, so that write is never missed.
        with self._lock:
            wake_r = self._wake_pipe(w.thread)[0]
        sockfd = sock.fileno()
        fds = [sockfd, wake_r, *rfds]
        while w.status in (WAITING, READY):
            try:
                r, wr = _poll(fds, wfds)
            except (OSError, ValueError):
                return [], []
            if wake_r in r:
                _drain(wake_r)
                r = [fd for fd in r if fd != wake_r]
            if sockfd in r:
                if not self._pump_once(sock):
                    return [], []
                r = [fd for fd in r if fd != sockfd]
            if r or wr:
                return r, wr
        return [], []

    @staticmethod
    def _wake_pipe(th: ThreadInfo) -> tuple[int, int]:
        if th.wake_pipe is None:
            th.wake_pipe = os.pipe()
            for fd in th.wake_pipe:
                os.set_blocking(fd, False)
        return th.wake_pipe

    def _woken_wait(self, w: Wait, rfds, wfds):
        """Somebody else reads the socket: wait for on_wake through this thread's pipe."""
        with self._lock:
            if w.status not in (WAITING, READY):
                return [], []
            wake_r, wake_w = self._wake_pipe(w.thread)
            self._core.make_hot(w, lambda _t: _os_write(wake_w, b"w"), wake_r)
            self._flush()
        while True:
            r, wr = _poll([wake_r, *rfds], wfds)
            if wake_r in r:
                _drain(wake_r)  # on_wake ran, exactly once
                w.pipe = None
                return [], []
            if r or wr:
                return r, wr

    # -- reading the socket -----------------------------------------------------------------

    def _pump_once(self, sock: socket.socket, blocking: bool = False) -> bool:
        """Read what the socket has and handle it (the caller holds the pump lock).

        False when the connection is gone.
        """
        try:
            data = sock.recv(RECV_BYTES, 0 if blocking else _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            self._connection_lost(sock, "the timekeeper closed the connection")
            return False
        try:
            msgs = [decode(body, S2C) for body in self._frames.feed(data)]
        except ProtocolError as exc:
            self._connection_lost(sock, f"bad message: {exc}")
            return False
        checks = 0
        with self._lock:
            if sock is not self._sock:
                return False
            for msg in msgs:
                if msg[0] == "check":
                    checks += 1
                else:
                    self._core.dispatch(msg)
                    self._flush()  # a failed send fails the waits before the next message
        if checks:
            self._stall_check()
        return True

    def _connection_lost(self, sock: socket.socket, why: str) -> None:
        with self._lock:
            if sock is self._sock and not self._closed:
                core = self._core
                unannounced = core.failure is None
                core.fail_all(TimekeeperLost(self._address, why))
                self._flush()
                if unannounced and self.on_lost is not None:
                    self.on_lost(core.failure)

    def _reader(self, sock: socket.socket, bell: socket.socket | None, ctl: tuple[int, int],
                first: list[tuple]) -> None:
        """The reader thread.

        Hot -- some ``begin_wait`` waiter needs waking, or the process is stalled and must
        answer probes -- it reads the main connection. Cold, it leaves that connection to the
        program threads that wait inside the Coordinator and only listens on the doorbell,
        where the timekeeper sends stall checks: no cost while nothing happens. (Without a
        doorbell it looks at the main connection every COLD_POLL_S instead.)
        """
        core = self._core
        ctl_r = ctl[0]
        bell_frames = FrameReader()
        try:
            if first:
                with self._lock:
                    for msg in first:
                        core.dispatch(msg)
                        self._flush()
            sockfd = sock.fileno()
            bellfd = bell.fileno() if bell is not None else ctl_r
            while not self._closed and sock is self._sock:
                wants_main = core.hot_waits or core.stalled
                if wants_main and self._pump_lock.acquire(False):
                    try:
                        r = _poll([sockfd, ctl_r, bellfd])[0]
                        if ctl_r in r:
                            _drain(ctl_r)
                        if sockfd in r and not self._pump_once(sock):
                            break
                        if bell is not None and bellfd in r and not self._ring(bell, bell_frames):
                            bell.close()  # the main connection tells why (EOF, deadlock)
                            bell, bellfd = None, ctl_r
                    finally:
                        self._pump_lock.release()
                elif bell is not None:
                    # Cold, or a program thread reads the main connection (it kicks us when
                    # it stops): listen for stall checks only.
                    r = _poll([ctl_r, bellfd])[0]
                    if ctl_r in r:
                        _drain(ctl_r)
                    if bellfd in r and not self._ring(bell, bell_frames):
                        bell.close()
                        bell, bellfd = None, ctl_r
                else:
                    if _poll([ctl_r], (), COLD_POLL_S)[0]:
                        _drain(ctl_r)
                    if not core.hot_waits and self._pump_lock.acquire(False):
                        try:
                            if not self._pump_once(sock):
                                break
                        finally:
                            self._pump_lock.release()
                self._reader_cpu_ns = _thread_time_ns()
        except (OSError, ValueError):
            pass  # the socket or pipe was closed under us: close() or fork
        finally:
            self._reader_cpu_ns = _thread_time_ns()
            self._connection_lost(sock, "the timekeeper closed the connection")
            with self._lock:
                if self._ctl is ctl:  # nobody may kick a descriptor number that gets reused
                    self._ctl = None
                if sock is self._sock or self._closed:
                    sock.close()
            if bell is not None:
                bell.close()
            _close_pipe(ctl)

    def _ring(self, bell: socket.socket, frames: FrameReader) -> bool:
        """Stall checks from the doorbell; False when it closed (the timekeeper is gone)."""
        try:
            data = bell.recv(RECV_BYTES, _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            return False
        try:
            msgs = [decode(body, S2C) for body in frames.feed(data)]
        except ProtocolError:
            return False
        if msgs:
            self._core.see_gvt(max(msg[1] for msg in msgs))
        if any(msg[0] == "check" for msg in msgs):
            self._stall_check()
        return True

    def _stall_check(self) -> None:
        """Are the threads outside coordinated waits all asleep? (not holding self._lock)"""
        core = self._core
        if core.busy:
            return
        with self._lock:
            started = core.stall_check_start()
            self._flush()
        if started is None:
            return
        threads, activity = started
        tids = [th.native_id for th in threads]
        # Cheap first: a thread that gains CPU time within the gap is running.
        cpu = procstat.cpu_times(tids)
        _real_sleep(STALL_SAMPLE_GAP_S)
        if procstat.cpu_times(tids) != cpu:
            return
        # No CPU in the gap: asleep, or waiting for a core. Ask /proc (state, switches).
        before = procstat.sample_threads(tids)
        _real_sleep(STALL_SAMPLE_GAP_S)
        after = procstat.sample_threads(tids)
        if procstat.cpu_times(tids) != cpu or not procstat.all_asleep(before, after):
            return
        with self._lock:
            core.stall_check_commit(threads, activity, after)
            self._flush()

    # -- fork (the client module registers the hooks) -------------------------------------

    def _open(self, ticket: str | None, start_lvt_ns: int | None) -> None:
        """Connect, register and start the reader thread (``Coordinator._open``)."""
        raise NotImplementedError

    def _before_fork(self) -> None:
        self._lock.acquire()
        self._fork_ticket = None
        core = self._core
        if self._follow_fork and core.failure is None and self._sock is not None:
            ticket = core.new_ticket("fork")
            core.send(("spawn", ticket, FORK_SPAWN_TIMEOUT_S))
            self._flush()
            self._fork_ticket = ticket

    def _after_fork_parent(self) -> None:
        self._fork_ticket = None
        self._lock.release()

    def _after_fork_child(self) -> None:
        # Only the forking thread exists here: fresh locks, our own connection and pipes.
        self._lock = _allocate_lock()
        self._pump_lock = _allocate_lock()
        ticket = self._fork_ticket
        old, self._sock = self._sock, None
        if old is not None:
            old.close()  # only our copy of the descriptor: the parent's connection lives on
        _close_pipe(self._ctl)
        self._ctl = None
        core = self._core
        for th in core.threads.values():
            _close_pipe(th.wake_pipe)
        ident = _get_ident()
        core.reset_after_fork()
        self._reader_ident = None
        self._reader_cpu_ns = 0
        if ticket is None or not self._follow_fork:
            core.failure = core.failure or TimekeeperLost(self._address, "forked child")
            return
        try:
            self._open(ticket, core.lvt())
        except Exception as exc:
            core.failure = TimekeeperLost(self._address, f"re-registering after fork: {exc}")
            return
        with self._lock:  # the forking thread carries on as the child's program thread
            core.threads[ident] = ThreadInfo(ident, _get_native_id())


def _poll(rfds, wfds=(), timeout_s: float | None = None) -> tuple[list, list]:
    """``select`` for readiness with ``poll`` (no limit on descriptor numbers).

    Takes descriptors or objects with ``fileno()``; returns the ready ones as given.
    """
    poller = _real_poll()
    given: dict[int, Any] = {}
    masks: dict[int, int] = {}
    for obj, mask in [(o, _POLLIN) for o in rfds] + [(o, _POLLOUT) for o in wfds]:
        fd = obj if isinstance(obj, int) else obj.fileno()
        given[fd] = obj
        masks[fd] = masks.get(fd, 0) | mask
    for fd, mask in masks.items():
        poller.register(fd, mask)
    events = poller.poll(None if timeout_s is None else int(timeout_s * 1000))
    readable, writable = [], []
    for fd, ev in events:
        if ev & _POLLIN and masks[fd] & _select_module.POLLIN:
            readable.append(given[fd])
        if ev & _POLLOUT and masks[fd] & _select_module.POLLOUT:
            writable.append(given[fd])
    return readable, writable


def _drain(fd: int) -> None:
    try:
        _os_read(fd, 4096)
    except OSError:
        pass


def _close_pipe(pipe: tuple[int, int] | None) -> None:
    if pipe is not None:
        for fd in pipe:
            try:
                os.close(fd)
            except OSError:
                pass


def open_connection(address: Address, token: str, register: tuple,
                    timeout_s: float = CONNECT_TIMEOUT_S):
    """Connect and handshake; returns (socket, welcome, messages after it, FrameReader)."""
    try:
        if address.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = address.path
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in address.host else socket.AF_INET,
                                 socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            target = (address.host, address.port)
        sock.settimeout(timeout_s)
        sock.connect(target)
        sock.sendall(frame(handshake_body(token, register)))
        reader = FrameReader()
        msgs: list[tuple] = []
        while not msgs:
            data = sock.recv(RECV_BYTES)
            if not data:
                raise TimekeeperLost(address, "connection closed during the handshake")
            msgs = [decode(body, S2C) for body in reader.feed(data)]
        sock.settimeout(None)
    except (OSError, ProtocolError) as exc:
        raise TimekeeperLost(address, f"cannot connect: {exc}") from None
    if msgs[0][0] == "refused":
        sock.close()
        raise TimekeeperLost(address, f"refused: {msgs[0][2]}")
    if msgs[0][0] != "welcome":
        sock.close()
        raise TimekeeperLost(address, f"unexpected first message {msgs[0][0]!r}")
    return sock, msgs[0], msgs[1:], reader
