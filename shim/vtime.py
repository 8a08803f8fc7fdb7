"""Every clock the program reads and every wait it makes, virtual.

``install(rt, coordinator)`` patches:
- ``time.time/time_ns/monotonic/monotonic_ns/perf_counter/perf_counter_ns`` and ``time.sleep``;
  names bound early (``from time import perf_counter`` in modules imported before revati) are
  rebound by scanning the loaded modules; modules imported later bind the patched functions;
- ``datetime.datetime.now/utcnow/today`` and ``datetime.date.today``;
- ``threading.Condition.wait/notify`` (so Event, Semaphore, Barrier, queue.Queue and
  concurrent.futures waits are virtual), ``threading.Thread.join``, and thread start/exit so the
  coordinator knows which threads exist;
- every ``selectors`` selector's ``select`` and ``select.select`` (so asyncio's stock event
  loop, multiprocessing.connection.wait and subprocess timeouts are virtual), and blocking
  ``multiprocessing`` Connection reads;
- uvloop, when imported, falls back to the stock asyncio loop (its C loop reads real clocks).

All processes of one emulation share the epoch and the monotonic base, so time.time() and
time.monotonic() agree across processes as they do on one real machine.
"""

from __future__ import annotations

import datetime as _datetime
import os
import queue
import selectors
import sys
import threading
import time
import types
from typing import Any

from revati.shim import import_hooks, real
from revati.shim.vwait import Waits, timeout_ns, virtual_select_select, virtual_selector_select
from revati.shim.patching import patch

REAL = real.TIME

EPOCH_ENV = "REVATI_EPOCH_NS"
MONO_ENV = "REVATI_MONO_BASE_NS"


def connect_coordinator(cfg, lvt_fn=None) -> Any:
    """The emulation's timekeeper when ``revati emulate`` started one (REVATI_COORD_* in the
    environment), else in-process coordination of this process's own threads."""
    from revati.shim.coord.client import Coordinator

    coord = Coordinator.from_env(cfg.process_name or _default_name(), lvt_fn=lvt_fn)
    if coord is not None:
        coord.on_lost = _stop_this_process
        return coord
    from revati.shim.local_coord import LocalCoordinator

    return LocalCoordinator(start_ns=0)


def _stop_this_process(error: BaseException) -> None:
    """The timekeeper vanished (revati emulate was killed): this process's clock means nothing
    any more, so it ends -- SIGTERM now (the program may clean up), SIGKILL 5 s later.
    See Note [No orphans] in revati/lifetime.py."""
    import _thread
    import signal

    print(f"revati: {error}; the emulation is over, stopping pid {os.getpid()}", file=sys.stderr)

    def kill_later() -> None:
        REAL["sleep"](5.0)
        os.kill(os.getpid(), signal.SIGKILL)

    _thread.start_new_thread(kill_later, ())
    os.kill(os.getpid(), signal.SIGTERM)


def _default_name() -> str:
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 in ("", "-c"):
        # multiprocessing spawn and `python -c` children: say whose child it is
        return f"child-of-{os.getppid()}-{os.getpid()}"
    return f"{os.path.basename(argv0)}-{os.getpid()}"


def _bases() -> tuple[int, int]:
    epoch = os.environ.get(EPOCH_ENV)
    mono = os.environ.get(MONO_ENV)
    epoch_ns = int(epoch) if epoch else REAL["time_ns"]()
    mono_ns = int(mono) if mono else REAL["monotonic_ns"]()
    # Children inherit the same bases, so all processes of the emulation agree.
    os.environ[EPOCH_ENV] = str(epoch_ns)
    os.environ[MONO_ENV] = str(mono_ns)
    return epoch_ns, mono_ns


_STATE: dict[str, Any] = {}
# failed child announcements: printed once, all counted (the process summary's
# unannounced_children: virtual time may have passed while those children started)
_UNANNOUNCED: list = []


def current_waits() -> Waits | None:
    """This process's wait primitives, once installed."""
    return _STATE.get("waits")


def unannounced_children() -> int:
    return len(_UNANNOUNCED)
THREAD_START_HOOKS: list = []  # run at the start of every program thread (thread-local torch state)


def install(rt, coordinator) -> Waits:
    if "waits" in _STATE:
        return _STATE["waits"]
    clock = rt.clock
    waits = Waits(clock, coordinator)
    _STATE["waits"] = waits
    epoch_ns, mono_ns = _bases()
    now = clock.now

    def v_time() -> float:
        return (epoch_ns + now()) / 1e9

    def v_time_ns() -> int:
        return epoch_ns + now()

    def v_monotonic() -> float:
        return (mono_ns + now()) / 1e9

    def v_monotonic_ns() -> int:
        return mono_ns + now()

    def v_sleep(secs: float) -> None:
        if secs < 0:
            raise ValueError("sleep length must be non-negative")
        if secs == 0:
            REAL["sleep"](0)
            return
        waits.sleep_until(now() + timeout_ns(secs))  # Note [Timeouts round up]

    virtual = {
        "time": v_time, "time_ns": v_time_ns, "monotonic": v_monotonic, "monotonic_ns": v_monotonic_ns,
        "perf_counter": v_monotonic, "perf_counter_ns": v_monotonic_ns, "sleep": v_sleep,
    }
    for name, fn in virtual.items():
        fn.__name__ = name
        fn.__qualname__ = name
        fn.__module__ = "time"
        patch(time, name, fn)
    _rebind_early(virtual)
    _install_datetime()
    _install_threading(waits, coordinator)
    _install_selectors(waits)
    _install_multiprocessing(waits)
    _install_child_announcement(coordinator)
    import_hooks.on_import("uvloop", _neutralise_uvloop)
    _install_fork_handling(rt, coordinator)
    return waits


def _rebind_early(virtual: dict[str, Any]) -> int:
    """Replace real time functions bound under other names in already-loaded modules."""
    originals = {id(fn): virtual[name] for name, fn in REAL.items()}
    count = 0
    for name, mod in list(sys.modules.items()):
        # revati's own modules keep their real clocks on purpose (the coordinator's monitor, ...)
        if not isinstance(mod, types.ModuleType) or mod is time or name.startswith("revati."):
            continue
        d = getattr(mod, "__dict__", None)
        if not d:
            continue
        try:
            items = list(d.items())
        except RuntimeError:
            continue
        for key, value in items:
            repl = originals.get(id(value))
            if repl is not None and callable(value):
                d[key] = repl
                count += 1
    return count


def _install_datetime() -> None:
    real_dt, real_date = _datetime.datetime, _datetime.date

    class datetime(real_dt):  # noqa: N801 - pickles as datetime.datetime
        @classmethod
        def now(cls, tz=None):
            return cls.fromtimestamp(time.time(), tz)

        @classmethod
        def utcnow(cls):
            return cls.fromtimestamp(time.time(), _datetime.timezone.utc).replace(tzinfo=None)

        @classmethod
        def today(cls):
            return cls.fromtimestamp(time.time())

    class date(real_date):  # noqa: N801
        @classmethod
        def today(cls):
            return cls.fromtimestamp(time.time())

    for cls, name in ((datetime, "datetime"), (date, "date")):
        cls.__module__ = "datetime"
        cls.__qualname__ = name
        cls.__name__ = name
    patch(_datetime, "datetime", datetime)
    patch(_datetime, "date", date)
    _extensions_see_real_datetime(real_dt, real_date, datetime, date)


def _extensions_see_real_datetime(real_dt, real_date, virtual_dt, virtual_date) -> None:
    """Note [Extension modules see datetime's C types]
    A C extension compiled against datetime (Cython's ``cimport datetime``: pandas) imports the
    classes by name from the ``datetime`` module while it loads and may derive its own static types
    from them: from a Python subclass it would inherit a heap type's layout and crash (pandas
    segfaulted in its first garbage collection). While an extension module loads, ``datetime``
    holds the real classes; Python code always sees the virtual ones."""
    import importlib.machinery

    loader = importlib.machinery.ExtensionFileLoader

    def with_real_classes(method):
        def load(self, arg):
            if _datetime.datetime is not virtual_dt:
                return method(self, arg)   # nested extension load, or classes patched again
            _datetime.datetime, _datetime.date = real_dt, real_date
            try:
                return method(self, arg)
            finally:
                _datetime.datetime, _datetime.date = virtual_dt, virtual_date
        return load

    patch(loader, "create_module", with_real_classes(loader.create_module))
    patch(loader, "exec_module", with_real_classes(loader.exec_module))


def _install_threading(waits: Waits, coordinator) -> None:
    cond = threading.Condition
    patch(cond, "wait", lambda self, timeout=None: waits.condition_wait(self, timeout))
    patch(cond, "notify", lambda self, n=1: waits.condition_notify(self, n))
    real_join = threading.Thread.join
    patch(threading.Thread, "join", lambda self, timeout=None: waits.join(self, timeout, real_join))

    real_bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]
    real_start = threading.Thread.start

    def start(self):
        # Thread.start waits until the new thread runs; that wait must not count as waiting
        # (the new thread registers only once it runs, so for an instant every thread of the
        # process would look blocked and a timeout could be granted early).
        if getattr(self, "_revati_internal", False):
            return real_start(self)
        waits.raw_waits(True)
        try:
            return real_start(self)
        finally:
            waits.raw_waits(False)

    def _bootstrap_inner(self):
        if getattr(self, "_revati_internal", False):
            return real_bootstrap(self)
        coordinator.register_thread()
        for hook in THREAD_START_HOOKS:
            hook()
        try:
            real_bootstrap(self)
        finally:
            # Wake joiners before leaving the coordinator: otherwise, for an instant, every
            # thread looks like it is waiting and a joiner's timeout would be granted.
            waits.thread_finished(self)
            coordinator.unregister_thread()

    patch(threading.Thread, "_bootstrap_inner", _bootstrap_inner)
    patch(threading.Thread, "start", start)
    # Idle concurrent.futures workers block in SimpleQueue.get, on a C lock that no patch
    # reaches: the process would look RUNNING until a stall check found it asleep (~0.15 s of
    # real time per wake-up of an asyncio server). The pure-Python twin waits on a Semaphore,
    # i.e. on a coordinated Condition.
    patch(queue, "SimpleQueue", queue._PySimpleQueue)


def _install_selectors(waits: Waits) -> None:
    for name in ("SelectSelector", "PollSelector", "EpollSelector", "DevpollSelector", "KqueueSelector"):
        cls = getattr(selectors, name, None)
        if cls is None or getattr(cls.select, "__revati__", False):
            continue
        patch(cls, "select", virtual_selector_select(waits, cls.select))
    import select as _select

    patch(_select, "select", virtual_select_select(waits))


def _install_multiprocessing(waits: Waits) -> None:
    """Blocking reads wait virtually; every message carries its sender's virtual send time.

    # Note [Causal stamps on channels]
    # A message sent at virtual time T must not be observed by its receiver before T: the
    # receiver's clock jumps to at least T when it reads the message. multiprocessing
    # connections (pipes and queues between emulated processes) carry the stamp in-band: 8
    # bytes of the sender's virtual time before every message. Both ends of such a connection
    # are emulated processes (children inherit the shim), so the framing is private.
    """
    import multiprocessing.connection as mpc
    import struct

    clock = waits.clock
    pack, unpack = struct.Struct("<q").pack, struct.Struct("<q").unpack_from

    for cls in (mpc.Connection,):
        real_send, real_recv = cls._send_bytes, cls._recv_bytes

        def _send_bytes(self, buf, _real=real_send):
            _real(self, pack(clock.now()) + bytes(buf))

        def _recv_bytes(self, maxsize=None, _real=real_recv):
            if not self._poll(0):
                self._poll(None)  # a virtual wait (multiprocessing.connection.wait -> selectors)
            data = _real(self, None if maxsize is None else maxsize + 8)
            raw = data.getbuffer()
            stamp = unpack(raw, 0)[0]
            payload = bytes(raw[8:])
            del raw
            if stamp > clock.now():
                clock.advance_to(stamp)
            data.seek(0)
            data.truncate()
            data.write(payload)
            data.seek(0)
            return data

        patch(cls, "_send_bytes", _send_bytes)
        patch(cls, "_recv_bytes", _recv_bytes)


def _install_child_announcement(coordinator) -> None:
    """Announce every Python child started with exec (subprocess, multiprocessing spawn).

    Until the child registers, the timekeeper must not advance virtual time past the parent's
    present: the parent may be waiting for the child (a spawned worker's ready message). Forked
    children are handled by the coordinator itself.
    """
    announce = getattr(coordinator, "announce_child", None)
    if announce is None:
        return
    import _posixsubprocess

    real_fork_exec = _posixsubprocess.fork_exec

    def fork_exec(args, executable_list, *rest):
        env_list = rest[3] if len(rest) > 3 else None
        if env_list is None:  # the child inherits this process's environment
            env_list = [f"{k}={v}".encode() for k, v in os.environ.items()]
            inherited = True
        else:
            inherited = False
        ticket = None
        if _is_emulated_python(args, executable_list, env_list):
            try:
                ticket = announce(timeout_s=120.0)
                extra = [f"{k}={v}".encode() for k, v in coordinator.child_env(ticket).items()]
                names = {x.split(b"=", 1)[0] for x in extra}
                keep = [e for e in env_list if e.split(b"=", 1)[0] not in names]
                rest = rest[:3] + (keep + extra,) + rest[4:]
            except Exception as exc:  # the child starts unannounced: say so, once per process
                ticket = None
                _UNANNOUNCED.append(exc)
                if len(_UNANNOUNCED) == 1:
                    print(f"revati: could not announce a child process to the timekeeper ({exc!r}); virtual "
                          "time may pass while it starts", file=sys.stderr)
        elif inherited:
            pass  # leave env=None: nothing to add
        try:
            pid = real_fork_exec(args, executable_list, *rest)
        except BaseException:
            if ticket is not None:
                coordinator.cancel_child(ticket)
            raise
        if ticket is not None:
            coordinator.child_started(ticket, pid)
        return pid

    patch(_posixsubprocess, "fork_exec", fork_exec)
    # subprocess binds fork_exec when it is imported (3.11: ``from _posixsubprocess import
    # fork_exec as _fork_exec``), usually before the shim runs: without this, children started
    # with subprocess (torchrun's workers, helper scripts) were never announced.
    import subprocess

    if getattr(subprocess, "_fork_exec", None) is real_fork_exec:
        patch(subprocess, "_fork_exec", fork_exec)


def _is_emulated_python(args, executable_list, env_list) -> bool:
    if not env_list or not any(e.startswith(b"REVATI_INJECT=") for e in env_list):
        return False
    names = [os.path.basename(os.fsdecode(x)) for x in (list(executable_list or []) + list(args or [])[:1])]
    return any(n.startswith("python") for n in names)


def _neutralise_uvloop(mod) -> None:
    import asyncio

    patch(mod, "new_event_loop", asyncio.new_event_loop)
    patch(mod, "install", lambda: None)
    patch(mod, "EventLoopPolicy", asyncio.DefaultEventLoopPolicy)
    patch(mod, "Loop", asyncio.SelectorEventLoop)
    patch(mod, "run", lambda main, *, debug=None, **kw: asyncio.run(main, debug=debug))


def _install_fork_handling(rt, coordinator) -> None:
    hook = getattr(coordinator, "after_fork_in_child", None)
    if hook is not None:
        os.register_at_fork(after_in_child=hook)
