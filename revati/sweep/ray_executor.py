"""Run a sweep's commands as Ray tasks (``revati sweep --ray [ADDRESS]``).

Each run is one task that starts the run's command in a fresh subprocess inside a temporary
folder on the worker -- no fork of the worker itself, so a Ray worker's threads and state never
leak into the emulation -- and returns the exit code and the folder's files, which the driver
writes into the run's folder. Workers need not share a disk with the driver, but they need the
same software (revati, the engine) installed.

``address``: ``"local"`` starts a private Ray instance on this machine with ``jobs`` CPUs;
anything else (``auto``, ``ray://host:10001``, ``host:6379``) is passed to ``ray.init``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from revati.errors import RevatiError
from revati.sweep.plan import RunSpec
from revati.sweep.runner import RunOutcome, execute_in_tempdir


class RayUnavailable(RevatiError):
    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"--ray needs ray: {reason} (pip install 'revati[ray]')")


@dataclass
class RayExecutor:
    address: str = "local"
    jobs: int = 1
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None

    def run(self, specs: list[RunSpec], sweep_dir: Path, on_done: Callable[[RunOutcome], None]) -> None:
        try:
            import ray
        except ImportError as exc:
            raise RayUnavailable(str(exc)) from None
        started_here = not ray.is_initialized()
        if started_here:
            if self.address == "local":
                ray.init(num_cpus=self.jobs, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        try:
            task = ray.remote(num_cpus=1, max_retries=0)(_execute_on_node)
            pending = {task.remote(spec.argv, self.env, self.timeout_s): spec for spec in specs}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    spec = pending.pop(ref)
                    try:
                        out = ray.get(ref)
                        outcome = RunOutcome(spec.run_id, "", out["exit_code"], out["wall_s"], out["error"],
                                             files=out["files"], node=out.get("node", ""))
                    except Exception as exc:  # noqa: BLE001 - a task that died is a failed run
                        outcome = RunOutcome(spec.run_id, "", None, None, f"ray task failed: {type(exc).__name__}: {exc}")
                    on_done(outcome)
        finally:
            if started_here:
                ray.shutdown()


def _execute_on_node(argv_template: tuple[str, ...], env: dict[str, str], timeout_s: float | None) -> dict:
    """A Ray task: the run in a fresh folder on this node, and the node's id (in run.json)."""
    import ray

    out = execute_in_tempdir(argv_template, env, timeout_s)
    out["node"] = ray.get_runtime_context().get_node_id()
    return out
