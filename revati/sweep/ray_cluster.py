"""A Ray cluster of several nodes on this machine, started with ``ray start`` (benchmarks, tests).

``LocalRayCluster(workers=2)`` starts a head node that offers no CPUs to tasks and ``workers``
worker nodes of ``cpus_per_worker`` CPUs each, so a sweep's runs (one CPU each) are spread over
the worker nodes as they would be over the machines of a real cluster; ``address`` is what
``revati sweep --ray ADDRESS`` takes. Leaving the ``with`` block runs ``ray stop --force``, which
stops every Ray process of this user on the machine.

Token authentication is off inside the block (``RAY_AUTH_MODE=disabled`` for the nodes and this
process): the cluster is this machine's own, and with Ray 2.60's default a worker node's
``ray start`` here was refused by the head ("InvalidAuthToken") although both ran as one user.

Example::

    with LocalRayCluster(workers=2) as cluster:
        run_sweep(cfg, jobs=2, ray_address=cluster.address)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from revati.errors import RevatiError
from revati.sweep.plan import free_port

START_TIMEOUT_S = 300
AUTH_MODE = "RAY_AUTH_MODE"


class RayStartFailed(RevatiError):
    def __init__(self, argv: list[str], output: str):
        self.argv, self.output = argv, output
        super().__init__(f"{' '.join(argv)} failed: {output.strip()[-600:]}")


def _ray_cli() -> str:
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.is_file() else (shutil.which("ray") or "ray")


class LocalRayCluster:
    def __init__(self, workers: int, cpus_per_worker: int = 1):
        self.workers, self.cpus_per_worker = workers, cpus_per_worker
        self.ray = _ray_cli()
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._tmp = ""
        self._auth_mode: str | None = None

    def _start(self, *flags: str) -> None:
        argv = [self.ray, "start", *flags, "--disable-usage-stats"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT_S, env=os.environ.copy())
        if proc.returncode != 0:
            raise RayStartFailed(argv, proc.stderr or proc.stdout)

    def __enter__(self) -> "LocalRayCluster":
        self._auth_mode = os.environ.get(AUTH_MODE)
        os.environ[AUTH_MODE] = "disabled"
        # a short private folder: Ray's socket paths must fit in sun_path (108 bytes)
        self._tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        try:
            self._start("--head", "--port", str(self.port), "--num-cpus", "0", "--include-dashboard=false",
                        "--temp-dir", self._tmp)
            for _ in range(self.workers):
                self._start("--address", self.address, "--num-cpus", str(self.cpus_per_worker))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def worker_nodes(self) -> list[str]:
        """Ids of the live nodes that offer CPUs (the workers; the head offers none). Asked from a
        fresh process: a second ``ray.init`` in one process after ``ray.shutdown`` left the next
        driver's task results unreachable (OwnerDiedError)."""
        probe = ("import json, ray; ray.init(address=%r, log_to_driver=False, configure_logging=False); "
                 "print(json.dumps([n['NodeID'] for n in ray.nodes() "
                 "if n.get('Alive') and n.get('Resources', {}).get('CPU', 0) > 0]))" % self.address)
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=START_TIMEOUT_S, env=os.environ.copy())
        if proc.returncode != 0:
            raise RayStartFailed([sys.executable, "-c", "ray.nodes()"], proc.stderr or proc.stdout)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def __exit__(self, *exc) -> None:
        subprocess.run([self.ray, "stop", "--force"], capture_output=True, timeout=120)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
        if self._auth_mode is None:
            os.environ.pop(AUTH_MODE, None)
        else:
            os.environ[AUTH_MODE] = self._auth_mode
