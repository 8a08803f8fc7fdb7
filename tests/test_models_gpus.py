"""The GPU spec table is internally consistent (catches a mistyped figure)."""

from __future__ import annotations

import pytest

from revati import gpus

EXPECTED = {"h100_sxm", "h100_pcie", "h200", "a100_sxm_80gb", "a100_sxm_40gb", "a40", "l40s", "l4", "b200"}


def test_table_covers_the_issue_list():
    assert EXPECTED <= set(gpus.GPUS)


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_spec_is_consistent(key):
    s = gpus.get(key)
    # CUDA reports a little less than the marketed capacity (GiB-sized HBM/GDDR stacks).
    assert 0.9 * s.memory_datasheet_gb * 2 ** 30 <= s.memory_bytes <= s.memory_datasheet_gb * 2 ** 30
    # bandwidth = bus width x double data rate x memory clock, within a few percent of the sheet
    derived = s.memory_bus_width_bits / 8 * 2 * s.mem_clock_mhz * 1e6
    assert derived == pytest.approx(s.memory_bandwidth_bytes_per_s, rel=0.05)
    pf = s.peak_flops
    assert pf["bf16"] == pf["fp16"] and pf["tf32"] == pytest.approx(pf["bf16"] / 2, rel=0.03)
    if "fp8" in pf:
        assert pf["fp8"] == pytest.approx(2 * pf["bf16"], rel=0.02)
    assert s.pcie_bandwidth_bytes_per_s in (64e9, 128e9)
    assert s.source.startswith("NVIDIA") and "CUDA memory" in s.source
    assert gpus.resolve_key(s.name) == key


def test_aliases_resolve():
    assert gpus.resolve_key("h100") == "h100_sxm"
    assert gpus.resolve_key("NVIDIA A100-SXM4-80GB") == "a100_sxm_80gb"
    assert gpus.resolve_key("a100") == "a100_sxm_80gb"
