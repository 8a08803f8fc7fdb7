"""Report generation from a real sweep: files exist, PNGs decode, the HTML is self-contained."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("matplotlib", reason="needs matplotlib: pip install 'revati[plot]'")

from click.testing import CliRunner  # noqa: E402
from matplotlib import image as mpimg  # noqa: E402

from revati.cli import cli  # noqa: E402
from revati.report.data import load_curves  # noqa: E402
from revati.report.plots import front  # noqa: E402
from revati.sweep.config import load_sweep  # noqa: E402
from revati.sweep.run import run_sweep  # noqa: E402
from sweep_helpers import write_sweep  # noqa: E402


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    path = write_sweep(tmp / "s.yaml", tmp / "out", gpus=["h100", "a100"], engine={"max_num_seqs": 32},
                       workload={"request_rate": [2, 8, 32], "num_prompts": 30, "random_output_len": 16},
                       slo_search={"ttft_ms": 200, "tpot_ms": 20, "rate_low": 1, "rate_high": 64, "iterations": 1})
    out = run_sweep(load_sweep(path), jobs=2, quiet=True)
    assert not out.failed_ids
    return out.results_path


def test_report_files(results, tmp_path):
    res = CliRunner().invoke(cli, ["report", str(results), "-o", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    rep = tmp_path / "rep"
    for name in ("latency_vs_rate.png", "pareto_front.png"):
        img = mpimg.imread(rep / name)             # decodes as a PNG
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    # self-contained: no external resource of any kind
    assert not re.search(r"(src|href)\s*=\s*['\"](?!data:)", html)
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "Highest request rate meeting the SLOs" in html and "gpu=a100" in html


def test_curves_and_pareto_front(results):
    curves, failed = load_curves(results)
    assert failed == 0 and len(curves) == 2
    assert {c.label for c in curves} == {"gpu=h100", "gpu=a100"}
    for c in curves:
        rates = [p.request_rate for p in c.points]
        assert rates == sorted(rates) and {2.0, 8.0, 32.0} <= set(rates)
    pts = [(1.0, 5.0, "a", 1), (2.0, 4.0, "a", 2), (1.5, 3.0, "b", 3), (3.0, 1.0, "b", 4)]
    assert front(pts) == [(3.0, 1.0, "b", 4), (2.0, 4.0, "a", 2), (1.0, 5.0, "a", 1)]


def test_report_rejects_foreign_files(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "x.parquet"), "-o", str(tmp_path / "r")])
    assert res.exit_code == 1 and "Traceback" not in res.output and "not a readable Parquet file" in res.output
