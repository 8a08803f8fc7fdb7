"""SGLang's scheduler and data-parallel controller wait on their sockets when idle, instead of
spinning; the busy scheduler checks for requests causally (Note [SGLang's request check is causal]).

# Note [SGLang's idle scheduler waits]
# SGLang's scheduler polls its input sockets without blocking and, with nothing to run, loops
# at once (one core at 100%; ``--sleep-on-idle`` is off by default). Under emulation a process
# that never waits never tells the timekeeper where its clock is, so no other process's virtual
# deadline can be granted (a client's next arrival, the API server's timeouts): the run stops.
# Its own clock would also count the spinning as host work. So the scheduler that reads the
# tokenizer's requests always gets SGLang's idle sleeper (its ``--sleep-on-idle`` path: a
# ``zmq.Poller`` on the same sockets, which the ZeroMQ adapter turns into a virtual wait). A
# request then wakes it at the request's send time, as the spinning loop would have picked it
# up on a GPU box, and the idle spin costs no virtual time. The data-parallel controller
# (``--dp``) only drains its input socket, forever and without a pause, and has no sleeper: it
# first waits until its socket has a request, then drains it as SGLang does.
"""

from __future__ import annotations

from typing import Any

from revati.shim.patching import original, patch


def install(mod: Any) -> None:
    """On import of sglang.srt.managers.scheduler."""
    from sglang.srt.managers.scheduler_components.idle_sleeper import IdleSleeper
    from sglang.srt.runtime_context import get_parallel

    scheduler = mod.Scheduler
    real_init = original(scheduler, "init_idle_sleeper")

    def init_idle_sleeper(self) -> None:
        real_init(self)
        par = get_parallel()
        # the ranks SGLang gives a sleeper with --sleep-on-idle: the ones reading the sockets
        if self.idle_sleeper is None and par.pp_rank == 0 and par.attn_tp_rank == 0 and par.attn_cp_rank == 0:
            self.idle_sleeper = IdleSleeper(
                sockets=[self.ipc_channels.recv_from_tokenizer, self.ipc_channels.recv_from_rpc],
                can_empty_cache=lambda: not self._engine_paused)

    patch(scheduler, "init_idle_sleeper", init_idle_sleeper)


def install_dp_controller(mod: Any) -> None:
    """On import of sglang.srt.managers.data_parallel_controller."""
    import zmq

    controller = mod.DataParallelController
    sock_recv = mod.sock_recv

    def event_loop(self) -> None:
        while True:
            self.recv_from_tokenizer.poll()   # a virtual wait until a request is there
            while True:
                self.soft_watchdog.feed()
                try:
                    recv_req = sock_recv(self.recv_from_tokenizer, flags=zmq.NOBLOCK)
                except zmq.ZMQError:
                    break
                self._request_dispatcher(recv_req)

    patch(controller, "event_loop", event_loop)


# Real time (virtual milliseconds) a busy scheduler's check for new requests waits: long enough to
# go through the timekeeper (every process with an earlier clock runs first), short enough to cost
# nothing a GPU box would see.
REQUEST_SYNC_MS = 0.001


def install_request_sync(mod: Any) -> None:
    """On import of sglang.srt.managers.scheduler_components.request_receiver.

    Note [SGLang's request check is causal]
    Between steps the scheduler takes new requests with non-blocking receives. A process that
    runs steps back to back never waits, so its clock can run ahead of the tokenizer manager's:
    a request sent at virtual time T, still in flight in real time when the scheduler looked,
    was taken one or many steps later, its time to first token lengthened by the scheduler's
    lead (one request in 50 at 16 req/s: 186 ms against 23-69 ms). Before draining, the
    scheduler polls its sockets with a 1 us virtual timeout through the timekeeper, which grants
    it only once every process that could still send something earlier has run up to then.
    """
    import zmq

    from revati.shim.engines import zmq_adapter
    from sglang.srt.runtime_context import get_parallel

    receiver = mod.SchedulerRequestReceiver
    real_pull = original(receiver, "_pull_raw_reqs")

    def _pull_raw_reqs(self):
        par = get_parallel()
        if par.pp_rank == 0 and par.attn_tp_rank == 0 and par.attn_cp_rank == 0 \
                and isinstance(self.recv_from_tokenizer, zmq.Socket) and zmq_adapter.virtual_poll is not None:
            socks = [(self.recv_from_tokenizer, zmq.POLLIN)]
            if isinstance(self.recv_from_rpc, zmq.Socket):
                socks.append((self.recv_from_rpc, zmq.POLLIN))
            zmq_adapter.virtual_poll(socks, REQUEST_SYNC_MS)
        return real_pull(self)

    patch(receiver, "_pull_raw_reqs", _pull_raw_reqs)
