"""Kineto JSON -> trace tables: columns, op tree, op->kernel links, memory, syncs, collectives,
warm-up. GPU-format traces are assembled in libkineto's output format (tests/kineto_traces.py)."""

from __future__ import annotations

import pytest

from kineto_traces import BASE_NS, PID, TraceBuilder, gpu_trace
from revati import schema
from revati.tracer import kineto_convert as kc
from revati import tables
from revati.tracer import steps


def _convert(trace, min_step=None, marks=None):
    marks = marks or steps.StepMarks(ranges_ns=kc.find_step_ranges(trace))
    return kc.convert(trace, "run-x", PID, assign=marks.assigner(), min_step=min_step)


@pytest.fixture(scope="module")
def converted():
    return _convert(gpu_trace(steps=3))


def test_every_table_validates_against_the_schema(converted):
    built = tables.rows_to_tables(converted.tables)
    assert set(built) == {"ops", "kernels", "launches", "op_kernels", "memory_ops", "collectives", "syncs"}
    for name, table in built.items():
        schema.validate(table, name)
        assert table.num_rows > 0, name
        assert set(table.column("run_id").to_pylist()) == {"run-x"}


def test_timestamps_are_unix_ns_from_base_time(converted):
    first_kernel = min(converted.tables["kernels"], key=lambda k: k["start_ns"])
    # gpu_step(t0=1000 µs) puts the gemm kernel at t0 + 60 µs
    assert first_kernel["start_ns"] == BASE_NS + 1_060_000
    assert first_kernel["duration_ns"] == 30_000 == first_kernel["end_ns"] - first_kernel["start_ns"]


def test_kernel_columns_decoded(converted):
    gemm = next(k for k in converted.tables["kernels"] if "cutlass" in k["name"])
    assert (gemm["grid_x"], gemm["grid_y"], gemm["grid_z"]) == (172, 1, 1)
    assert (gemm["block_x"], gemm["block_y"], gemm["block_z"]) == (128, 1, 1)
    assert gemm["dynamic_smem_bytes"] == 49152 and gemm["static_smem_bytes"] is None
    assert gemm["regs_per_thread"] == 168 and gemm["stream_id"] == 7 and gemm["device_id"] == 0
    assert gemm["short_name"] == "cutlass::Kernel" and gemm["source"] == "kineto"
    graph = next(k for k in converted.tables["kernels"] if "MulFunctor" in k["name"])
    assert (graph["graph_id"], graph["graph_node_id"]) == (5, 51)


def test_op_tree_parents_and_depths(converted):
    ops = {o["op_id"]: o for o in converted.tables["ops"]}
    addmm = next(o for o in ops.values() if o["name"] == "aten::addmm")
    linear = ops[addmm["parent_op_id"]]
    assert linear["name"] == "aten::linear" and linear["depth"] == 1
    assert ops[linear["parent_op_id"]]["name"] == "revati.step" and addmm["depth"] == 2
    assert addmm["input_dims"][:3] == [[11008], [8, 4096], [4096, 11008]]
    assert addmm["input_dtypes"][:3] == ["c10::BFloat16"] * 3


def test_every_kernel_linked_and_how(converted):
    links = converted.tables["op_kernels"]
    ops = {o["op_id"]: o["name"] for o in converted.tables["ops"]}
    by_corr = {link["correlation_id"]: link for link in links}
    kernels = {k["correlation_id"]: k for k in converted.tables["kernels"]}
    assert set(kernels) <= set(by_corr)  # all linked
    methods = {kernels[c]["short_name"]: (by_corr[c]["link_method"], ops[by_corr[c]["op_id"]]) for c in kernels}
    assert methods["cutlass::Kernel"] == ("external_id", "aten::addmm")
    assert methods["at::native::(anonymous namespace)::cunn_SoftMaxForward"] == ("containment", "aten::softmax")
    assert methods["at::native::vectorized_elementwise_kernel"] == ("graph_launch", "aten::mul")
    assert methods["ncclDevKernel_AllReduce_Sum_bf16_RING_LL"] == ("external_id", "record_param_comms")
    memcpy = converted.tables["memory_ops"][0]
    assert ops[by_corr[memcpy["correlation_id"]]["op_id"]] == "aten::copy_"


def test_launches_memory_syncs_collectives(converted):
    launches = converted.tables["launches"]
    per_thread = sorted(r["seq_in_thread"] for r in launches)
    assert per_thread == list(range(len(launches)))
    mem = converted.tables["memory_ops"][0]
    assert (mem["kind"], mem["copy_kind"], mem["size_bytes"], mem["is_async"]) == ("memcpy", "HtoD", 65536, True)
    sync = converted.tables["syncs"][0]
    assert (sync["kind"], sync["stream_id"], sync["tid"]) == ("stream", 7, PID)
    assert sync["end_ns"] - sync["start_ns"] == 45_000  # host time blocked in cudaStreamSynchronize
    coll = converted.tables["collectives"][0]
    assert (coll["collective_name"], coll["group_size"], coll["dtype"]) == ("allreduce", 2, "BFloat16")
    assert coll["message_bytes"] == 32768 * 2 and coll["kernel_name"].startswith("ncclDevKernel")
    nccl = next(k for k in converted.tables["kernels"] if k["name"].startswith("nccl"))
    assert (coll["start_ns"], coll["end_ns"]) == (nccl["start_ns"], nccl["end_ns"])


def test_steps_from_ranges_and_warmup_drop():
    trace = gpu_trace(steps=3)
    full = _convert(trace)
    assert sorted({k["step"] for k in full.tables["kernels"]}) == [0, 1, 2]
    kept = _convert(trace, min_step=2)
    assert {k["step"] for k in kept.tables["kernels"]} == {2}
    assert len(kept.tables["kernels"]) * 3 == len(full.tables["kernels"])
    kept_ops = {o["op_id"] for o in kept.tables["ops"]}
    kept_corr = {k["correlation_id"] for k in kept.tables["kernels"]} | {m["correlation_id"] for m in kept.tables["memory_ops"]}
    assert kept.tables["op_kernels"] and all(
        link["op_id"] in kept_ops and link["correlation_id"] in kept_corr for link in kept.tables["op_kernels"])
    assert kept.stats.dropped_warmup_rows > 0


def test_step_marks_from_step_calls_number_from_zero():
    trace = gpu_trace(steps=3, step_ranges=False)
    # step() after each step: calls at the ends of steps 0 and 1
    marks = steps.StepMarks(marks_ns=[BASE_NS + 1_900_000, BASE_NS + 2_900_000])
    conv = _convert(trace, marks=marks)
    assert sorted({k["step"] for k in conv.tables["kernels"]}) == [0, 1, 2]


def test_tensor_list_inputs_and_missing_external_ids():
    b = TraceBuilder()
    b.op("aten::cat", 10, 5, [[[2, 3], [4, 3]], []], ["TensorList", "Scalar"])
    b.events.append({"ph": "X", "cat": "cpu_op", "name": "aten::empty", "pid": PID, "tid": PID,
                     "ts": 20, "dur": 1, "args": {}})  # no External id: gets a synthetic one
    conv = kc.convert(b.trace(), "r", PID)
    cat, empty = conv.tables["ops"]
    assert cat["input_dims"] == [[2, 3], []] and cat["input_dtypes"] == ["TensorList", "Scalar"]
    assert empty["op_id"] < 0
    tables.rows_to_tables(conv.tables)


@pytest.mark.parametrize("name, short", [
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, at::detail::Array<char*, 1> >(int, at::native::FillFunctor<float>, at::detail::Array<char*, 1>)",
     "at::native::vectorized_elementwise_kernel"),
    ("ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_stages_64x4_tn", "ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_stages_64x4_tn"),
    ("Memset (Device)", "Memset"),
])
def test_kernel_short_name(name, short):
    assert kc.kernel_short_name(name) == short


@pytest.mark.parametrize("api, base, launch", [
    ("cudaLaunchKernel", "cudaLaunchKernel", True), ("cudaLaunchKernel_v7000", "cudaLaunchKernel", True),
    ("cudaMemcpyAsync_ptsz", "cudaMemcpyAsync", False), ("cuLaunchKernel", "cuLaunchKernel", True),
    ("cudaGraphLaunch_v10000", "cudaGraphLaunch", True), ("cudaStreamSynchronize", "cudaStreamSynchronize", False),
])
def test_api_names(api, base, launch):
    assert kc.api_base_name(api) == base and kc.is_kernel_launch_api(api) is launch
