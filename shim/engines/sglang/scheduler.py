"""SGLang's scheduler and data-parallel controller wait on their sockets when idle, instead of spinning.

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
