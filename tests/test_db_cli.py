"""``revati db`` end to end with click's CliRunner, on the shipped traces/ and files written into
the isolated REVATI_HOME (no /work/shared needed)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from revati import parquet_io, paths, schema
from revati.cli import cli
from revati.replay.kernel_db import db as kdb

import db_samples

SHIPPED = paths.embedded_traces_dir()   # imports/ and the GPU ground-truth runs under gpu/


def run(*args: str):
    return CliRunner().invoke(cli, ["db", *args], catch_exceptions=False)


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def shipped_samples() -> pa.Table:
    """op_samples of the shipped imports, read with pyarrow alone (independent of the views)."""
    files = sorted(SHIPPED.rglob("op_samples*.parquet"))
    assert files, "traces/imports ships op_samples files"
    return pa.concat_tables(parquet_io.read_table(f, "op_samples") for f in files)


def samples_file(path: Path, n: int = 3, gpu: str = "h100_sxm", op: str = "gemm") -> Path:
    table = pa.table({"run_id": ["test"] * n, "source": ["test"] * n, "gpu": [gpu] * n, "op": [op] * n,
                      "m": [1, 2, 3][:n], "n": [8] * n, "k": [8] * n, "duration_median_ns": [1000.0] * n})
    return parquet_io.write_table(table, "op_samples", path)


# -- query formats ------------------------------------------------------------------------------

SQL = ("SELECT gpu, op, count(*) AS n, sum(coalesce(duration_median_ns, duration_mean_ns)) AS total_ns "
       "FROM op_samples GROUP BY ALL ORDER BY gpu, op")


@pytest.fixture(scope="module")
def expected_counts():
    con = duckdb.connect()
    con.register("s", shipped_samples())
    return con.execute(SQL.replace("op_samples", "s")).fetchall()


def test_query_table_format(expected_counts):
    res = run("query", SQL)
    assert res.exit_code == 0, res.output
    assert f"{len(expected_counts)} rows" in res.output
    gpu, op, n, _ = expected_counts[0]
    assert any(gpu in line and op in line and str(n) in line for line in res.output.splitlines())


def test_query_csv_matches_the_files(expected_counts):
    res = run("query", SQL, "--format", "csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.reader(io.StringIO(res.output)))
    assert rows[0] == ["gpu", "op", "n", "total_ns"]
    got = [(g, o, int(n), float(t)) for g, o, n, t in rows[1:]]
    assert [r[:3] for r in got] == [r[:3] for r in expected_counts]
    assert [r[3] for r in got] == pytest.approx([r[3] for r in expected_counts])
    assert {("h100_sxm", "gemm"), ("a100_sxm_80gb", "attn_decode"), ("h100_sxm", "all_to_all")} <= {
        (r[0], r[1]) for r in got}


def test_query_json(expected_counts):
    res = run("query", SQL + " LIMIT 2", "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert [(d["gpu"], d["op"], d["n"]) for d in data] == [r[:3] for r in expected_counts[:2]]


def test_query_parquet_and_output_files(tmp_path, expected_counts):
    out = tmp_path / "res.parquet"
    res = run("query", SQL, "--format", "parquet", "-o", str(out))
    assert res.exit_code == 0 and res.output == ""
    back = pq.read_table(out)
    assert back.column_names == ["gpu", "op", "n", "total_ns"] and back.num_rows == len(expected_counts)
    assert back.column("n").to_pylist() == [r[2] for r in expected_counts]
    csv_out = tmp_path / "res.csv"
    assert run("query", SQL, "--format", "csv", "-o", str(csv_out)).exit_code == 0
    assert csv_out.read_text().splitlines()[0] == "gpu,op,n,total_ns"
    json_out = tmp_path / "res.json"
    assert run("query", SQL, "--format", "json", "-o", str(json_out)).exit_code == 0
    assert len(json.loads(json_out.read_text())) == len(expected_counts)


def test_query_parquet_needs_output():
    res = run("query", "SELECT 1", "--format", "parquet")
    assert res.exit_code == 2 and "give -o FILE" in res.output


def test_query_nested_values_as_csv_and_json():
    sql = "SELECT [1, 2] AS l, MAP(['a'], ['b']) AS m, NULL AS z, 'x,y' AS s, 'nan'::DOUBLE AS f"
    rows = list(csv.reader(io.StringIO(run("query", sql, "--format", "csv").output)))
    assert rows == [["l", "m", "z", "s", "f"], ["[1,2]", '{"a":"b"}', "", "x,y", ""]]
    assert json.loads(run("query", sql, "--format", "json").output) == [
        {"l": [1, 2], "m": {"a": "b"}, "z": None, "s": "x,y", "f": None}]


@pytest.mark.parametrize("sql, needle", [
    ("SELEC 1", "Parser Error"),
    ("SELECT * FROM no_such_table", "no_such_table"),
    ("SELECT nope FROM op_samples", "nope"),
    ("CREATE TABLE t AS SELECT 1", "read-only"),
])
def test_sql_errors_are_one_line(sql, needle, isolated_home):
    assert run("info").exit_code == 0
    stored = kdb.db_path(isolated_home).read_bytes()
    res = run("query", sql)
    assert_one_line_error(res, "SQL error", needle)
    assert kdb.db_path(isolated_home).read_bytes() == stored


# -- info and kernels ---------------------------------------------------------------------------

def test_info_lists_tables_gpus_sources_versions(expected_counts):
    res = run("info")
    assert res.exit_code == 0, res.output
    total = sum(r[2] for r in expected_counts)
    op_line = next(line for line in res.output.splitlines() if "op_samples" in line)
    assert str(total) in op_line
    runs = sum(parquet_io.read_table(f, "runs").num_rows for f in SHIPPED.rglob("runs.parquet"))
    runs_line = next(line for line in res.output.splitlines() if line.strip("│ ").startswith("runs "))
    assert str(runs) in runs_line
    for needle in ("h100_sxm", "a100_sxm_80gb", "vidur", "aiconfigurator", "vllm 0.24.0", "nccl 2.29.2",
                   "sarathi-serve (vidur@7d475133)", "revati.duckdb"):
        assert needle in res.output, needle


def test_kernels_top_gemm_on_h100_matches_the_files():
    res = run("kernels", "--gpu", "h100", "--op", "gemm", "--limit", "3")
    assert res.exit_code == 0, res.output
    con = duckdb.connect()
    con.register("s", shipped_samples())
    want = con.execute("""
        SELECT source, coalesce(kernel_source, op), count(*), sum(coalesce(duration_median_ns, duration_mean_ns))
        FROM s WHERE gpu = 'h100_sxm' AND op = 'gemm' GROUP BY ALL ORDER BY 4 DESC LIMIT 3""").fetchall()
    with kdb.KernelDB.open() as db:
        got = db.top_kernels(gpu="h100", op="gemm", limit=3).to_pylist()
    assert [(g["source"], g["kernel"], g["count"]) for g in got] == [w[:3] for w in want]
    assert [g["total_ms"] for g in got] == pytest.approx([w[3] / 1e6 for w in want], abs=1e-3)
    assert "3 rows" in res.output and "gemm" in res.output and "gpu=h100" in res.output
    assert {g["gpu"] for g in got} == {"h100_sxm"}


def test_kernels_filters_by_source_and_rejects_unknown_gpu():
    with kdb.KernelDB.open() as db:
        rows = db.top_kernels(source="vidur", op="all_reduce", limit=50).to_pylist()
    assert rows and {r["source"] for r in rows} == {"vidur"} and {r["op"] for r in rows} == {"all_reduce"}
    assert_one_line_error(run("kernels", "--gpu", "tpu9"), "unknown GPU 'tpu9'")
    assert_one_line_error(run("kernels", "--limit", "0"), "--limit")


# -- views see new files; bad files are named --------------------------------------------------

def test_new_files_are_seen_without_rebuild(isolated_home):
    before = int(run("query", "SELECT count(*) FROM op_samples", "--format", "csv").output.split()[1])
    samples_file(isolated_home / "traces" / "imports" / "mine" / "op_samples-h100_sxm-compute.parquet", n=3)
    after = int(run("query", "SELECT count(*) FROM op_samples", "--format", "csv").output.split()[1])
    assert after == before + 3
    # a traced run folder: runs + kernels, joined by the kernels command
    run_dir = isolated_home / "traces" / "run-1"
    # a source of its own: the embedded GPU ground-truth runs (traces/gpu) have kernels too
    parquet_io.write_table(pa.table({"run_id": ["run-1"], "source": ["kineto-test"], "gpu": ["h100_sxm"]}),
                           "runs", run_dir / "runs.parquet")
    parquet_io.write_table(pa.table({
        "run_id": ["run-1"] * 3, "name": ["ampere_gemm", "ampere_gemm", "flash_fwd"],
        "start_ns": [0, 10, 20], "end_ns": [5, 15, 60], "duration_ns": [5, 5, 40]}), "kernels",
        run_dir / "kernels.parquet")
    with kdb.KernelDB.open() as db:
        rows = db.top_kernels(source="kineto-test").to_pylist()
    assert [(r["kernel"], r["count"], r["gpu"]) for r in rows] == [("flash_fwd", 1, "h100_sxm"),
                                                                  ("ampere_gemm", 2, "h100_sxm")]
    # a plain DuckDB client of the database file sees a new file too: the views are globs
    samples_file(isolated_home / "traces" / "imports" / "mine" / "op_samples-h100_sxm-more.parquet", n=2)
    con = duckdb.connect(str(kdb.db_path(isolated_home)), read_only=True)
    assert con.execute("SELECT count(*) FROM op_samples").fetchall()[0][0] == before + 5
    con.close()


def test_hidden_staging_folders_are_ignored(isolated_home):
    before = int(run("query", "SELECT count(*) FROM op_samples", "--format", "csv").output.split()[1])
    samples_file(isolated_home / "traces" / "imports" / ".mine.staging-x" / "op_samples-h100_sxm-compute.parquet")
    after = int(run("query", "SELECT count(*) FROM op_samples", "--format", "csv").output.split()[1])
    assert after == before


@pytest.mark.parametrize("write, needle", [
    (lambda p: pq.write_table(pa.table({"a": [1]}), p), "not a revati table"),
    (lambda p: p.write_bytes(samples_file(p).read_bytes()[:200]), "truncated or not a Parquet"),
    (lambda p: parquet_io.write_table(pa.table({"run_id": ["r"], "name": ["k"], "start_ns": [0], "end_ns": [1],
                                                "duration_ns": [1]}), "kernels", p), "holds 'kernels'"),
    (lambda p: p.write_text("gpu,op\nh100,gemm\n"), "truncated or not a Parquet"),
])
def test_foreign_files_in_traces_give_one_line_errors(isolated_home, write, needle):
    bad = isolated_home / "traces" / "junk" / "op_samples-bad.parquet"
    bad.parent.mkdir(parents=True)
    write(bad)
    for args in (["query", "SELECT 1"], ["info"], ["kernels"]):
        assert_one_line_error(run(*args), str(bad), needle)
    bad.unlink()
    assert run("query", "SELECT 1").exit_code == 0


def test_corrupt_database_file_is_reported(isolated_home):
    kdb.db_path(isolated_home).write_bytes(b"not a database at all" * 100)
    assert_one_line_error(run("info"), "revati.duckdb", "delete it")


def test_locked_database_falls_back_to_memory(isolated_home):
    with kdb.KernelDB.open():
        pass
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(kdb.db_path(isolated_home))!r})
        print("locked", flush=True)
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with kdb.KernelDB.open() as db:
            assert db.in_memory
            assert db.query("SELECT count(*) AS n FROM op_samples").column("n")[0].as_py() > 0
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


# -- import through the CLI: bad input changes nothing -------------------------------------------

@pytest.fixture
def stored_import(tmp_path, isolated_home):
    src = tmp_path / "vidur"
    db_samples.write_vidur_mlp(src)
    res = run("import", "vidur", str(src), "--quiet")
    assert res.exit_code == 0, res.output
    dest = isolated_home / "traces" / "imports" / "vidur"
    snapshot = {p.name: p.read_bytes() for p in dest.iterdir()}
    assert "runs.parquet" in snapshot
    return src, dest, snapshot


def _break_truncate(src: Path) -> Path:
    p = next(src.rglob("mlp.csv"))
    p.write_text(p.read_text()[:-25])
    return p


def _break_foreign(src: Path) -> Path:
    p = next(src.rglob("mlp.csv"))
    p.write_text("name,price\napple,3\n")
    return p


def _break_unknown_column(src: Path) -> Path:
    p = next(src.rglob("mlp.csv"))
    text = p.read_text().splitlines()
    p.write_text("\n".join([text[0] + ",colour"] + [line + ",red" for line in text[1:]]) + "\n")
    return p


def _break_unit(src: Path) -> Path:
    p = next(src.rglob("mlp.csv"))
    p.unlink()
    return db_samples.write_vidur_mlp(src, unit_scale=1000.0)


def _break_missing(src: Path) -> Path:
    p = next(src.rglob("mlp.csv"))
    p.unlink()
    return src


@pytest.mark.parametrize("breaker, needle", [
    (_break_truncate, "fields"),
    (_break_foreign, "unknown column"),
    (_break_unknown_column, "'colour'"),
    (_break_unit, "not in ms"),
    (_break_missing, "no Vidur profiling files"),
])
def test_bad_vidur_import_changes_nothing(stored_import, breaker, needle):
    src, dest, snapshot = stored_import
    bad = breaker(src)
    assert_one_line_error(run("import", "vidur", str(src)), str(bad), needle)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == snapshot
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(".")] == []


def test_missing_path_import(tmp_path):
    assert_one_line_error(run("import", "aiconfigurator", str(tmp_path / "absent")), "absent", "no such file")


@pytest.mark.parametrize("mutate, needle", [
    (lambda p: pq.write_table(pa.table({"foo": [1], "bar": ["x"]}), p), "unknown column"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "truncated or not a Parquet"),
    (lambda p: pq.write_table(pq.read_table(p).drop(["latency"]), p), "missing column"),
])
def test_bad_aiconfigurator_import_changes_nothing(tmp_path, isolated_home, mutate, needle):
    src = tmp_path / "aic"
    gemm = db_samples.write_aic_gemm(src)
    assert run("import", "aiconfigurator", str(src), "-q").exit_code == 0
    dest = isolated_home / "traces" / "imports" / "aiconfigurator"
    snapshot = {p.name: p.read_bytes() for p in dest.iterdir()}
    mutate(gemm)
    assert_one_line_error(run("import", "aiconfigurator", str(src)), str(gemm), needle)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == snapshot


def test_import_summary_and_query_of_imported_rows(tmp_path, isolated_home):
    src = tmp_path / "vidur"
    db_samples.write_vidur_mlp(src)
    db_samples.write_vidur_network(src)
    res = run("import", "vidur", str(src), "--software", "sarathi-serve (test)")
    assert res.exit_code == 0, res.output
    assert "all_reduce" in res.output and "gemm" in res.output and "wrote 4 tables" in res.output
    out = run("query", "SELECT op, count(*) AS n FROM op_samples WHERE software = 'sarathi-serve (test)' "
                       "GROUP BY op ORDER BY op", "--format", "json")
    counts = {d["op"]: d["n"] for d in json.loads(out.output)}
    assert counts == {"activation": 3, "all_reduce": 3, "elementwise": 3, "embedding": 3, "gemm": 12,
                      "norm": 6, "rope": 3}


def test_import_option_errors():
    assert_one_line_error(run("import", "aiconfigurator", "x", "--software", "y"), "--software")
    assert_one_line_error(run("import", "vidur", "x", "--latest-only"), "--latest-only")


@pytest.mark.parametrize("args", [["--help"], ["import", "--help"], ["query", "--help"], ["kernels", "--help"],
                                  ["info", "--help"]])
def test_help_has_examples(args):
    res = run(*args)
    assert res.exit_code == 0 and ("Example" in res.output) and "revati db" in res.output


def test_views_cover_every_schema_table_with_its_columns():
    with kdb.KernelDB.open() as db:
        for table, sch in schema.TABLES.items():
            cols = db.query(f"SELECT * FROM {table} LIMIT 0").column_names
            assert cols == sch.names, table


def test_every_shipped_sample_has_its_family_parameters():
    from revati import vocab

    with kdb.KernelDB.open() as db:
        assert db.query("SELECT count(*) AS n FROM op_samples").column("n")[0].as_py() > 500_000
        for name, fam in vocab.FAMILIES.items():
            bad = " OR ".join(f"{p} IS NULL OR {p} <= 0" for p in fam.params)
            n = db.query(f"SELECT count(*) AS n FROM op_samples WHERE op = '{name}' AND ({bad})").column("n")[0]
            assert n.as_py() == 0, name
        assert db.query("SELECT count(*) AS n FROM op_samples WHERE kv_len < q_tokens OR "
                        "NOT coalesce(duration_median_ns, duration_mean_ns) > 0").column("n")[0].as_py() == 0
        assert set(db.query("SELECT DISTINCT op FROM op_samples").column("op").to_pylist()) <= set(vocab.FAMILIES)


def test_info_warns_about_the_same_run_in_two_folders(isolated_home):
    assert "warning" not in run("info").output
    shipped_runs = SHIPPED / "imports" / "vidur-attention" / "runs.parquet"
    copy = isolated_home / "traces" / "copy" / "runs.parquet"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(shipped_runs.read_bytes())
    res = run("info")
    assert res.exit_code == 0 and "warning: 1 run(s) appear in more than one file" in res.output


# -- queries only read; -o writes only outside revati's stores (issue 15, item 5) ----------------

@pytest.mark.parametrize("template, refused", [
    ("COPY (SELECT 1 AS x) TO '{runs}'", "COPY"),
    ("COPY (SELECT 1 AS x) TO '{runs}' (FORMAT parquet)", "COPY"),
    ("EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{runs}'", "COPY"),
    ("SELECT 1; COPY (SELECT 1 AS x) TO '{runs}'", "COPY"),
    ("EXPORT DATABASE '{dest}/export'", "EXPORT"),
    ("CREATE TABLE t AS SELECT 1", "CREATE"),
    ("CREATE OR REPLACE VIEW runs AS SELECT 1", "CREATE"),
    ("INSERT INTO runs (run_id) VALUES ('x')", "INSERT"),
    ("DROP VIEW runs", "DROP"),
    ("ATTACH '{dest}/new.duckdb' AS other", "ATTACH"),
    ("INSTALL httpfs", "INSTALL"),
    ("LOAD httpfs", "LOAD"),
    ("SET profiling_output = '{runs}'", "SET"),
    ("PRAGMA enable_profiling", "PRAGMA"),
    ("CALL pragma_version()", "CALL"),
    ("CHECKPOINT", "CHECKPOINT"),
])
def test_queries_cannot_write(stored_import, tmp_path, template, refused, isolated_home):
    _, dest, snapshot = stored_import
    sql = template.format(runs=dest / "runs.parquet", dest=tmp_path)
    assert run("info").exit_code == 0                                    # the database file exists
    stored = kdb.db_path(isolated_home).read_bytes()
    assert_one_line_error(run("query", sql), f"{refused} refused", "read-only", "-o FILE")
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == snapshot
    assert kdb.db_path(isolated_home).read_bytes() == stored
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vidur"]      # no export, no new database
    assert run("info").exit_code == 0


@pytest.mark.parametrize("sql", [
    "SELECT count(*) AS n FROM runs",
    "WITH r AS (SELECT * FROM runs) SELECT count(*) AS n FROM r",
    "FROM op_samples SELECT count(*) AS n",
    "DESCRIBE op_samples",
    "SUMMARIZE SELECT 1 AS x",
    "SHOW TABLES",
    "EXPLAIN SELECT count(*) FROM op_samples",
    "EXPLAIN ANALYZE SELECT count(*) FROM runs",
    "SELECT 1 AS a; SELECT 2 AS b",
])
def test_read_only_queries_still_work(sql):
    res = run("query", sql, "--format", "csv")
    assert res.exit_code == 0, res.output
    assert res.output.strip()


def _stores(isolated_home):
    return {"home": isolated_home / "out.csv",
            "stored table": isolated_home / "traces" / "imports" / "vidur" / "runs.parquet",
            "shipped traces": paths.embedded_traces_dir() / "out.csv",
            "shipped models": paths.embedded_models_dir() / "out.csv"}


@pytest.mark.parametrize("store", ["home", "stored table", "shipped traces", "shipped models"])
def test_output_refuses_revati_stores(stored_import, isolated_home, store):
    _, dest, snapshot = stored_import
    target = _stores(isolated_home)[store]
    existed = target.exists()
    assert_one_line_error(run("query", "SELECT 1 AS x", "-o", str(target), "--format", "parquet"),
                          "inside revati's own store")
    assert target.exists() == existed
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == snapshot


def test_output_refuses_a_link_into_a_store(tmp_path, isolated_home):
    (isolated_home / "traces").mkdir(parents=True, exist_ok=True)
    link = tmp_path / "link"
    link.symlink_to(isolated_home / "traces")
    assert_one_line_error(run("query", "SELECT 1 AS x", "-o", str(link / "x.csv")), "inside revati's own store")
    assert not (isolated_home / "traces" / "x.csv").exists()


def test_output_into_a_missing_folder_is_an_error(tmp_path):
    target = tmp_path / "missing" / "deeper" / "out.csv"
    assert_one_line_error(run("query", "SELECT 1 AS x", "-o", str(target)), "no such folder", "missing")
    assert not (tmp_path / "missing").exists()
    below_file = tmp_path / "file"
    below_file.write_text("x")
    assert_one_line_error(run("query", "SELECT 1 AS x", "-o", str(below_file / "out.csv")), "not a folder")


@pytest.mark.parametrize("below", ["file/sub", "file/sub/deeper"])
def test_import_to_below_a_regular_file_is_one_line(tmp_path, below):
    src = tmp_path / "vidur"
    db_samples.write_vidur_mlp(src)
    (tmp_path / "file").write_text("not a folder\n")
    dest = tmp_path / below
    assert_one_line_error(run("import", "vidur", str(src), "--to", str(dest), "-q"),
                          str(dest), "is a file, not a folder")
    assert (tmp_path / "file").read_text() == "not a folder\n"
    assert_one_line_error(run("import", "vidur", str(src), "--to", "/etc/hostname/sub", "-q"),
                          "/etc/hostname is a file")


def test_kernels_for_a_gpu_without_data_says_why():
    proc = subprocess.run([sys.executable, "-m", "revati", "db", "kernels", "--gpu", "l40s"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "gpu=l40s: no ops or kernels recorded" in proc.stderr and "h100_sxm" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_tables_piped_to_a_program_keep_whole_rows():
    # Not a terminal: rich used to lay the table out in 80 columns, wrapping numbers mid-value.
    proc = subprocess.run([sys.executable, "-m", "revati", "db", "kernels", "--gpu", "h100", "--limit", "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 3  # one line per row: nothing wrapped
    assert all(line.count("│") == 9 for line in rows)  # 8 columns
