"""Report generation from a real sweep: files exist, PNGs decode, the HTML is self-contained."""

from __future__ import annotations

import re
import shutil
import subprocess

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


def test_report_states_and_draws_its_slos(results, tmp_path):
    res = CliRunner().invoke(cli, ["report", str(results), "-o", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "SLOs: p99 TTFT &lt;= 200 ms and p99 TPOT &lt;= 20 ms" in html
    # only what varies between the rows is a column; the constant keys are said once
    assert "Same in every row:" in html and "max_num_seqs=32" in html
    assert '{"max_num_seqs": 32}' not in html


def test_latency_axes_go_logarithmic_when_values_span_decades():
    from matplotlib import pyplot as plt

    from revati.report import plots
    from revati.report.data import Curve, Point

    calls = []
    real = plt.Axes.set_yscale

    def spy(self, value, **kw):
        calls.append((self.get_title(), value))
        return real(self, value, **kw)

    curve = Curve("k", {}, "c", [Point("a", 1.0, {"p50_ttft_ms": 20.0, "p50_tpot_ms": 10.0, "p50_e2el_ms": 900.0}, 1),
                                 Point("b", 8.0, {"p50_ttft_ms": 9000.0, "p50_tpot_ms": 12.0, "p50_e2el_ms": 950.0}, 1)])
    plt.Axes.set_yscale = spy
    try:
        plots.latency_vs_rate([curve], {"percentile": 99, "ttft_ms": 500, "tpot_ms": None})
    finally:
        plt.Axes.set_yscale = real
    assert ("TTFT vs request rate", "log") in calls
    assert not any(t.startswith(("TPOT", "E2EL")) for t, _ in calls)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_report_renders_in_headless_chromium(results, tmp_path):
    rep = tmp_path / "rep"
    assert CliRunner().invoke(cli, ["report", str(results), "-o", str(rep)]).exit_code == 0
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = (rep / "report.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "SLOs: p99 TTFT &lt;= 200 ms" in dom.stdout and dom.stdout.count("<img") == 2
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2400", url], capture_output=True,
                   timeout=120, check=True)
    pixels = mpimg.imread(shot)
    # the plots drew: many distinct colours, not a blank or text-only page
    colours = {tuple(px) for px in (pixels[::7, ::7, :3] * 255).astype(int).reshape(-1, 3)}
    assert len(colours) > 50
