"""vLLM's shared-memory message queue between emulated processes: virtual waits, causal stamps.

``shm_broadcast.MessageQueue`` carries every step of a TP>1 engine: the engine core broadcasts
the scheduler output to the workers through a shared-memory ring buffer, and each worker
returns its result through one of its own. Its readers spin (docs/vllm.md, "Where vLLM needs
cross-process virtual time"): the native ``vllm.spinloop`` extension for 0.1 s of real time,
then ``sched_yield`` in Python for a second after each read, then a ZMQ poll on the writer's
notify socket. Under emulation that spin is wrong twice: it burns the few real cores every
process shares (the run crawls), and a reader's host clock counts its spinning, so the step it
then runs starts when the spin ended instead of when the data was written.

So, each when vLLM imports the module (Note [Shared-memory queues in virtual time]):

- the native spin is off and a reader's wait goes straight to the notify poll, which the ZMQ
  adapter turns into a virtual wait (revati.shim.engines.zmq_adapter);
- every message carries its writer's virtual time: ``enqueue`` wraps the object with the time,
  ``dequeue`` unwraps it and moves the reader's clock to at least that time. Data found already
  written, without any wait, is therefore still seen no earlier than it was sent.

Note [Shared-memory queues in virtual time]
A shared-memory write is seen by a real reader after the write, at the reader's next look:
while spinning, at once. In virtual time the reader's clock after reading is max(its own
clock, the writer's clock at the write) -- the rule of every channel between emulated
processes (Note [Causal stamps on channels]) -- and its waiting costs no host time. The ring
buffer itself has no room for the stamp, so it rides inside the pickled message.
The notification must not be lost, nor be late in virtual time: vLLM's readers spin on the
buffer's flags, so they never depended on it. Two things lost it here, and each loss cost the
reader vLLM's recheck interval (5 s of virtual time; a PP=2 offline run took 45 s for 12
tokens): the writer's PUB socket has a send high-water mark of 1, and libzmq processes the
command that frees it at most once per ~1 ms of real time, so the second of two notifications
sent close together was dropped -- the mark is lifted (0: none); and libzmq's I/O threads may
deliver a notification after the writer has gone on to wait, when the timekeeper's probe finds
every process blocked -- so the reader's wait also counts as ready when the buffer holds a
message it has not read (``also_ready``, Coordinator.wait_io).
"""

from __future__ import annotations

import threading
from typing import Any

from revati.shim.patching import original, patch

_READING = threading.local()   # .queue: the MessageQueue this thread is dequeuing from


class Stamped:
    """A message and its writer's virtual time (ns). Pickled by reference to this class: every
    process of an emulation imports revati."""

    __slots__ = ("sent_ns", "obj")

    def __init__(self, sent_ns: int, obj: Any):
        self.sent_ns = sent_ns
        self.obj = obj

    def __reduce__(self):
        return (Stamped, (self.sent_ns, self.obj))


def install(mod: Any) -> None:
    """Import hook of ``vllm.distributed.device_communicators.shm_broadcast``."""
    from revati.shim import runtime

    clock = runtime.get().clock
    if hasattr(mod, "SPINLOOP_EXT_ENABLED"):
        patch(mod, "SPINLOOP_EXT_ENABLED", False)
    zmq = mod.zmq

    from revati.shim.engines import zmq_adapter

    def wait_for_notify(self, timeout_ms: int | None = None) -> None:
        """SpinCondition.wait without the busy phase: wait for the writer's notification (or a
        cancel) at once. Both sockets are ZMQ, so the poll is a virtual wait; it counts as ready
        while the queue holds an unread message (Note [Shared-memory queues in virtual time])."""
        assert self.is_reader, "Only readers can wait"
        queue = getattr(_READING, "queue", None)
        if zmq_adapter.virtual_poll is None or queue is None:
            events = dict(self.poller.poll(timeout=timeout_ms))
        else:
            events = dict(zmq_adapter.virtual_poll(self.poller.sockets, timeout_ms,
                                                   lambda: _unread(queue)))
        if self.local_notify_socket in events:
            try:   # the notification (conflated: at most one is queued) carries no data of its own
                self.local_notify_socket.recv(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                pass

    patch(mod.SpinCondition, "wait", wait_for_notify)

    real_init = original(mod.SpinCondition, "__init__")

    def spin_condition_init(self, is_reader, *args, **kwargs):
        real_init(self, is_reader, *args, **kwargs)
        if not is_reader:   # Note [Shared-memory queues in virtual time]: no notification dropped
            self.local_notify_socket.setsockopt(zmq.SNDHWM, 0)

    patch(mod.SpinCondition, "__init__", spin_condition_init)

    queue = mod.MessageQueue
    # original(): the unpatched methods, also if the hook ran twice
    real_enqueue, real_dequeue = original(queue, "enqueue"), original(queue, "dequeue")

    def enqueue(self, obj, *args, **kwargs):
        return real_enqueue(self, Stamped(clock.now(), obj), *args, **kwargs)

    def dequeue(self, *args, **kwargs):
        _READING.queue = self
        try:
            got = real_dequeue(self, *args, **kwargs)
        finally:
            _READING.queue = None
        if not isinstance(got, Stamped):
            return got
        if got.sent_ns > clock.now():
            clock.advance_to(got.sent_ns)
        return got.obj

    patch(queue, "enqueue", enqueue)
    patch(queue, "dequeue", dequeue)


def _unread(queue: Any) -> bool:
    """The reader's next block is written and not yet read by it (vLLM's own ``check()`` in
    ``MessageQueue.acquire_read``)."""
    with queue.buffer.get_metadata(queue.current_idx) as metadata:
        return bool(metadata[0]) and not metadata[queue.local_reader_rank + 1]
