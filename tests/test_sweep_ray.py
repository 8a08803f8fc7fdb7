"""The Ray path: each run a Ray task on a local Ray instance, the command in a fresh subprocess."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="needs ray: pip install 'revati[ray]'")

from revati import parquet_io  # noqa: E402
from revati.sweep.config import load_sweep  # noqa: E402
from revati.sweep.run import run_sweep  # noqa: E402
from revati.sweep.runner import read_run_state, run_dir_of  # noqa: E402
from sweep_helpers import write_sweep  # noqa: E402

pytestmark = [pytest.mark.ray]


def test_sweep_on_local_ray(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", tmp_path / "out", engine={"max_num_seqs": 16},
                       workload={"request_rate": [4, 8], "num_prompts": 20})
    cfg = load_sweep(path)
    out = run_sweep(cfg, jobs=2, ray_address="local", quiet=True)
    assert not out.failed_ids and len(out.reports[0].ran) == 2
    for spec in out.runs:
        run_dir = run_dir_of(cfg.sweep_dir, spec.run_id)
        assert (run_dir / "metrics.json").exists() and (run_dir / "requests.jsonl").exists()
        assert "selftest:" in (run_dir / "stdout.log").read_text()    # files came back from the worker
        assert read_run_state(run_dir)["status"] == "ok"
    table = parquet_io.read_table(out.results_path, "sweep_results")
    assert table.column("status").to_pylist() == ["ok", "ok"]
    # resumable the same way as local runs
    again = run_sweep(cfg, jobs=2, ray_address="local", quiet=True)
    assert len(again.reports[0].skipped_ok) == 2


def test_sweep_on_a_ray_cluster_of_two_worker_nodes(tmp_path):
    """`ray start`: a head node with no task CPUs and two one-CPU worker nodes, as two machines
    would be; `revati sweep --ray ADDRESS` spreads the runs over both, and each run's run.json
    says where it ran."""
    import subprocess
    import sys

    from revati.sweep.ray_cluster import LocalRayCluster

    path = write_sweep(tmp_path / "s.yaml", tmp_path / "out", engine={"max_num_seqs": [16, 64]},
                       workload={"request_rate": [2, 4, 8, 16], "num_prompts": 20})
    cfg = load_sweep(path)
    with LocalRayCluster(workers=2) as cluster:
        nodes = cluster.worker_nodes()
        assert len(nodes) == 2
        proc = subprocess.run([sys.executable, "-m", "revati", "sweep", path, "--ray", cluster.address, "-q"],
                              capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = [read_run_state(d) for d in sorted((cfg.sweep_dir / "runs").iterdir())]
    assert len(states) == 8 and all(s["status"] == "ok" for s in states)
    assert {s["node"] for s in states} == set(nodes), [s["node"] for s in states]
