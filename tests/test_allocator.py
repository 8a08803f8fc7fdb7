from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from revati.shim.allocator import (
    LARGE_BUFFER, SMALL_BUFFER, AllocatorOOM, CachingAllocatorModel, round_size, segment_size,
)

MiB = 1 << 20


@pytest.mark.parametrize("nbytes, rounded", [(0, 512), (1, 512), (512, 512), (513, 1024), (4000, 4096)])
def test_round_size(nbytes, rounded):
    assert round_size(nbytes) == rounded


@pytest.mark.parametrize("size, seg", [(512, SMALL_BUFFER), (MiB, SMALL_BUFFER), (MiB + 512, LARGE_BUFFER),
                                       (10 * MiB, 10 * MiB), (11 * MiB + 1, 12 * MiB)])
def test_segment_size(size, seg):
    assert segment_size(size) == seg


def test_small_allocations_share_a_segment_and_stats_match_torch_rules():
    a = CachingAllocatorModel(capacity_bytes=1 << 30)
    b1 = a.malloc(1000)
    b2 = a.malloc(3000)
    assert a.stats.allocated_bytes == 1024 + 3072
    assert a.stats.reserved_bytes == SMALL_BUFFER
    assert b2.address == b1.address + 1024
    a.free(b1)
    assert a.stats.allocated_bytes == 3072 and a.stats.reserved_bytes == SMALL_BUFFER
    b3 = a.malloc(600)  # reuses the freed 1024 block (best fit, split leaves 0)
    assert b3.address == b1.address


def test_large_allocation_and_reuse_after_free():
    a = CachingAllocatorModel(capacity_bytes=1 << 30)
    blk = a.malloc(3 * MiB)
    assert a.stats.reserved_bytes == LARGE_BUFFER and a.stats.allocated_bytes == 3 * MiB
    a.free(blk)
    again = a.malloc(3 * MiB)
    assert again.address == blk.address and a.stats.reserved_bytes == LARGE_BUFFER


def test_oom_after_releasing_cache():
    a = CachingAllocatorModel(capacity_bytes=100 * MiB)
    keep = a.malloc(60 * MiB)
    cached = a.malloc(30 * MiB)
    a.free(cached)  # 30 MiB cached segment
    big = a.malloc(38 * MiB)  # needs the cache released first
    assert a.stats.reserved_bytes == 60 * MiB + 38 * MiB
    with pytest.raises(AllocatorOOM) as exc:
        a.malloc(4 * MiB)  # 20 MiB segment does not fit
    assert exc.value.requested_bytes == 4 * MiB and a.stats.num_ooms == 1
    a.free(keep)
    a.free(big)
    a.empty_cache()
    assert a.stats.reserved_bytes == 0 and a.stats.allocated_bytes == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 12 * MiB)), max_size=60))
def test_random_alloc_free_keeps_invariants(ops):
    a = CachingAllocatorModel(capacity_bytes=1 << 34)
    live = []
    for do_free, size in ops:
        if do_free and live:
            a.free(live.pop(size % len(live)))
        else:
            live.append(a.malloc(size))
        assert a.stats.allocated_bytes == sum(b.size for b in live)
        assert a.stats.allocated_bytes <= a.stats.reserved_bytes
        spans = sorted((b.address, b.address + b.size) for b in live)
        assert all(e <= s for (_, e), (s, _) in zip(spans, spans[1:])), "live blocks overlap"
    for b in live:
        a.free(b)
    a.empty_cache()
    assert a.stats.reserved_bytes == 0
