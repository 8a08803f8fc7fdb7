"""Run a whole sweep: the grid, then the SLO search if the sweep file asks for one.

Writes into the sweep folder (``SweepConfig.sweep_dir``): ``runs/<run_id>/`` per run,
``sweep_results.parquet`` (every run of this invocation: grid and SLO probes) and, with an SLO
search, ``slo_search.json``.

Example::

    from revati.sweep.config import load_sweep
    from revati.sweep.run import run_sweep
    outcome = run_sweep(load_sweep("SWEEP.yaml"), jobs=2)
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from revati.parquet_io import atomic_write_bytes
from revati.sweep import slo as slo_search
from revati.sweep.config import SweepConfig
from revati.sweep.flags import check_sweep
from revati.sweep.plan import RunSpec, expand
from revati.sweep.results import write_results
from revati.sweep.runner import Executor, LocalExecutor, SweepRunReport, run_all

SLO_FILE = "slo_search.json"
CONFIG_FILE = "sweep.json"


@dataclass
class SweepOutcome:
    sweep_dir: Path
    results_path: Path
    runs: list[RunSpec]
    reports: list[SweepRunReport] = field(default_factory=list)
    slo_results: list[dict] | None = None

    @property
    def failed_ids(self) -> list[str]:
        ids = {o.run_id for r in self.reports for o in r.failed}
        ids |= {i for r in self.reports for i in r.skipped_failed}
        ok_later = {o.run_id for r in self.reports for o in r.ran if o.status == "ok"}
        return sorted(ids - ok_later)


def make_executor(cfg: SweepConfig, jobs: int | None, ray_address: str | None) -> Executor:
    jobs = jobs or cfg.default_jobs
    if ray_address:
        from revati.sweep.ray_executor import RayExecutor

        return RayExecutor(address=ray_address, jobs=jobs, env=cfg.env, timeout_s=cfg.run_timeout_s)
    return LocalExecutor(jobs=jobs, env=cfg.env, timeout_s=cfg.run_timeout_s)


def run_sweep(
    cfg: SweepConfig,
    jobs: int | None = None,
    ray_address: str | None = None,
    retry_failed: bool = False,
    quiet: bool = False,
    console: Console | None = None,
) -> SweepOutcome:
    console = console or Console(stderr=True, quiet=quiet)
    check_sweep(cfg)             # a misspelt key fails here, not in every run's stderr.log
    sweep_dir = cfg.sweep_dir
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(sweep_dir / CONFIG_FILE, (json.dumps(asdict(cfg), indent=2, default=str) + "\n").encode())
    grid = expand(cfg)
    executor = make_executor(cfg, jobs, ray_address)
    # With an SLO search and no rates of its own, the grid only names the configurations to search.
    grid_runs = [] if cfg.slo_search is not None and "request_rate" not in cfg.workload else list(grid)
    outcome = SweepOutcome(sweep_dir, sweep_dir / "sweep_results.parquet", list(grid_runs))

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=quiet) as progress:
        def execute(specs: list[RunSpec], label: str) -> None:
            task = progress.add_task(label, total=len(specs))

            def tick(done: int, total: int) -> None:
                progress.update(task, completed=done + (len(specs) - total), total=len(specs))

            outcome.reports.append(run_all(specs, sweep_dir, executor, retry_failed=retry_failed, progress=tick))

        if grid_runs:
            execute(grid_runs, f"sweep {cfg.name}")
        if cfg.slo_search is not None:
            rounds = itertools.count(1)
            results, probes = slo_search.search(
                cfg, grid, sweep_dir, lambda specs: execute(specs, f"SLO search round {next(rounds)}"))
            outcome.slo_results = results
            known = {s.run_id for s in outcome.runs}
            outcome.runs += [p for p in probes if p.run_id not in known]
            atomic_write_bytes(sweep_dir / SLO_FILE, (json.dumps(results, indent=2, default=str) + "\n").encode())

    outcome.results_path = write_results(cfg.name, outcome.runs, sweep_dir)
    if not quiet:
        from revati.console import console as make_console

        print_outcome(outcome, make_console())
    return outcome


def outcome_line(outcome: SweepOutcome) -> str:
    """How many runs ran now and how many an earlier invocation had done. An SLO search that
    probes a rate the grid ran in this same invocation reuses that run: it is neither (a fresh
    sweep used to say "44 ran, 12 already done")."""
    ran_now = {o.run_id for r in outcome.reports for o in r.ran}
    done_before = {i for r in outcome.reports for i in r.skipped_ok} - ran_now
    return (f"{len(outcome.runs)} runs: {len(ran_now)} ran, {len(done_before)} already done by an earlier "
            f"invocation, {len(outcome.failed_ids)} failed")


def print_outcome(outcome: SweepOutcome, console: Console) -> None:
    console.print(f"{outcome_line(outcome)} -> {outcome.results_path}")
    for run_id in outcome.failed_ids[:10]:
        console.print(f"  [red]failed[/red] {run_id}: see {outcome.sweep_dir / 'runs' / run_id}/stderr.log")
    if outcome.slo_results:
        table = Table(title="Highest request rate meeting the SLOs")
        for col in ("gpu", "engine", "workload", "max rate (req/s)", "bracket"):
            table.add_column(col)
        for r in outcome.slo_results:
            rate = "none in range" if r["max_rate"] is None else f"{r['max_rate']:g}" + (" (upper bound)" if r["at_upper_bound"] else "")
            lo, hi = r["bracket"]
            table.add_row(str(r["gpu"]), json.dumps(r["engine"]), json.dumps(r["workload"]), rate,
                          f"[{lo if lo is not None else '-'}, {hi if hi is not None else '-'}]")
        console.print(table)
