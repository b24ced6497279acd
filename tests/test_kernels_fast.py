"""The generated, vectorised baseline + z-score kernel (changedet.kernels.fast) against the
library numpy path: bit-for-bit equal on NaN patterns that exercise both of its paths."""

from __future__ import annotations

import re

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from changedet.kernels import baseline_zscore, robust_baseline, zscore
from changedet.kernels import fast
from changedet.kernels.change import KernelError

pytestmark = pytest.mark.skipif(not fast.HAVE_NUMBA, reason="numba is pinned in constraints.txt")

FLOOR = 0.005

# Tests that read no history through the kernels run once; the others run on both
# kernels: the staging one (every date stride taken as aliasing, as a power-of-two
# cube's) and the in-place one (none taken as aliasing, a power-of-two cube included).
_ONCE = {"test_networks_sort_all_zero_one_inputs", "test_best_known_network_sorts_and_is_smaller",
         "test_generated_kernel_is_vectorised_and_prefetches", "test_staging_tile_fits_l2",
         "test_offpath_intrinsic_matches_numpy", "test_pruned_merger_keeps_the_ranks_the_pick_reads",
         "test_next_tile_prefetch_covers_every_line_once", "test_long_history_uses_generic_kernel"}


def pytest_generate_tests(metafunc):
    # Parametrised here rather than by the fixture's params so that the tests in _ONCE
    # are collected once instead of twice with one copy skipped.
    if "kernel_layout" in metafunc.fixturenames and metafunc.function.__name__ not in _ONCE:
        metafunc.parametrize("kernel_layout", ["staging", "in place"], indirect=True)


@pytest.fixture(autouse=True)
def kernel_layout(request, monkeypatch):
    layout = getattr(request, "param", None)
    if layout is None:  # a test in _ONCE: the library's own choice of kernel
        yield "staging"
        return
    monkeypatch.setattr(fast, "_aliases", lambda stride, nt: layout == "staging")
    yield layout


def _reference(h: np.ndarray, img: np.ndarray) -> np.ndarray:
    return zscore(xr.DataArray(img, dims=("band", "y", "x")),
                  robust_baseline(xr.DataArray(h, dims=("time", "band", "y", "x"))), mad_floor=FLOOR).values


def _fused(h, img, **kw) -> np.ndarray:
    return np.asarray(baseline_zscore(xr.DataArray(h, dims=("time", "band", "y", "x")),
                                      xr.DataArray(img, dims=("band", "y", "x")), mad_floor=FLOOR, **kw).values)


def _history(nt: int, seed: int = 0, nx: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """History whose rows cover every path: clear rows (fast path only), scattered NaN
    (every valid count from 0 to nt), a whole cloudy date, all-NaN and one-valid pixels,
    ties, a constant history (MAD 0 -> floor) and NaN image pixels. 300 columns: one full
    256-pixel block and a partial one."""
    rng = np.random.default_rng(seed)
    h = rng.normal(0.2, 0.02, size=(nt, 2, 12, nx)).astype(np.float32)
    cloud_odds = rng.random((1,) + h[:, :, 2:6].shape[1:])  # per pixel: all valid counts occur
    h[:, :, 2:6][rng.random(h[:, :, 2:6].shape) < cloud_odds] = np.nan
    h[nt // 2, :, 6] = np.nan  # one date cloudy over a whole row
    h[:, 0, 7, 10:20] = np.nan  # never observed
    h[1:, 1, 7, 10:20] = np.nan  # one valid date
    h[:, :, 8] = np.round(h[:, :, 8], 2)  # many ties
    h[:, :, 9, :50] = np.float32(0.25)  # constant: MAD 0
    img = rng.normal(0.2, 0.05, size=(2, 12, nx)).astype(np.float32)
    img[:, 10, 3:9] = np.nan
    img[:, 11, 280:] += 0.3  # a change
    return h, img


@pytest.mark.parametrize("nt", [1, 2, 5, 8, 19])
def test_generated_kernel_equals_numpy_path(nt):
    h, img = _history(nt)
    counts = np.count_nonzero(~np.isnan(h), axis=0)
    if nt >= 5:  # the cloudy rows give every valid count, even and odd, from 0 to nt
        assert set(np.unique(counts[:, 2:6])) == set(range(nt + 1))
    ref = _reference(h, img)
    got = _fused(h, img)
    np.testing.assert_array_equal(got, ref)  # bit for bit, NaN in the same places
    assert np.isnan(got[0, 7, 10:20]).all()  # no valid date
    assert np.isfinite(got[1, 7, 10:20]).all()  # one valid date: MAD 0, floor
    assert np.isnan(got[:, 10, 3:9]).all()  # NaN image
    assert np.isfinite(got[:, :2]).all()  # clear rows
    if nt >= 5:
        assert (got[:, 11, 280:] > 4).all()


def test_fast_and_general_paths_agree_per_pixel():
    # The same pixel gives the same z whether its block takes the fast path (no NaN in
    # the block) or is redone by the general path (a NaN elsewhere in the block).
    nt = 8
    h, img = _history(nt, seed=3)
    clear = h[:, :, :1].copy()
    z_fast = _fused(clear, img[:, :1])
    cloudy = clear.copy()
    cloudy[4, :, 0, 7] = np.nan
    z_general = _fused(cloudy, img[:, :1])
    keep = np.ones(clear.shape[-1], bool)
    keep[7] = False
    np.testing.assert_array_equal(z_general[..., keep], z_fast[..., keep])
    np.testing.assert_array_equal(z_general, _reference(cloudy, img[:, :1]))


def test_sum_overflow_and_large_values_still_exact():
    # Values near float32 max overflow the NaN check sum to inf: those pixels go to the
    # general path, which must still give the numpy result.
    h, img = _history(5, seed=4)
    h[:, :, 0, :40] = np.float32(3e38) * np.sign(h[:, :, 0, :40] - 0.2)
    np.testing.assert_array_equal(_fused(h, img), _reference(h, img))


def test_threads_do_not_change_results():
    h, img = _history(19, seed=5)
    one = _fused(h, img, threads=1)
    np.testing.assert_array_equal(_fused(h, img, threads=2), one)
    np.testing.assert_array_equal(_fused(h, img, threads=7), one)
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(KernelError, match="threads"):
            _fused(h, img, threads=bad)


@pytest.mark.parametrize("chunks", [{"y": 5, "x": 64}, {"y": 12, "x": 290}])
def test_numpy_equals_dask(chunks):
    h, img = _history(8, seed=6)
    ref = _fused(h, img)
    hd = xr.DataArray(h, dims=("time", "band", "y", "x")).chunk({"time": 3, **chunks})
    idd = xr.DataArray(img, dims=("band", "y", "x")).chunk(chunks)
    z = baseline_zscore(hd, idd, mad_floor=FLOOR)
    assert isinstance(z.data, da.Array)
    with dask.config.set(scheduler="threads", num_workers=2):
        np.testing.assert_array_equal(z.values, ref)


def test_long_history_uses_generic_kernel():
    nt = fast.MAX_UNROLLED + 1
    h, img = _history(nt, seed=7, nx=40)
    np.testing.assert_array_equal(_fused(h, img), _reference(h, img))


def test_networks_sort_all_zero_one_inputs():
    # 0-1 principle: a comparator network sorts every input iff it sorts every 0/1 input.
    for n in (3, 8, 13, 19):
        v = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.int8)
        for i, j in fast.sorting_network(n):
            v[:, i], v[:, j] = np.minimum(v[:, i], v[:, j]), np.maximum(v[:, i], v[:, j])
        assert (np.diff(v, axis=1) >= 0).all(), n
    # The merger sorts V-shaped (non-increasing then non-decreasing) 0/1 sequences: 1..1 0..0 1..1.
    for n in (2, 7, 19, 32):
        seqs = [np.r_[np.ones(a), np.zeros(n - a - b), np.ones(b)] for a in range(n + 1) for b in range(n + 1 - a)]
        v = np.asarray(seqs, dtype=np.int8)
        for i, j in fast.bitonic_merger(n):
            v[:, i], v[:, j] = np.minimum(v[:, i], v[:, j]), np.maximum(v[:, i], v[:, j])
        assert (np.diff(v, axis=1) >= 0).all(), n


def _sorts_all_zero_one_inputs(net, n) -> bool:
    # Channel k of all 2**n 0/1 inputs as packed bits: a comparator is AND (min) and OR (max).
    ch = [np.packbits((np.arange(2**n) >> k) & 1 == 1) for k in range(n)]
    for i, j in net:
        ch[i], ch[j] = ch[i] & ch[j], ch[i] | ch[j]
    return not any((ch[k] & ~ch[k + 1]).any() for k in range(n - 1))


def test_best_known_network_sorts_and_is_smaller():
    # 0-1 principle over all 2**19 inputs: the 85-comparator network used for 19 dates.
    n = 19
    net = fast.best_network(n)
    assert len(net) == 85 < len(fast.sorting_network(n))
    assert (net[:, 0] < net[:, 1]).all() and net.min() >= 0 and net.max() < n
    assert _sorts_all_zero_one_inputs(net, n)
    # The check can fail: without its last comparator the network no longer sorts.
    assert not _sorts_all_zero_one_inputs(net[:-1], n)
    np.testing.assert_array_equal(fast.best_network(8), fast.sorting_network(8))  # none listed: Batcher


def test_generated_kernel_is_vectorised_and_prefetches(tmp_path, monkeypatch):
    # What the speed rests on, read from the machine code: the sorting network as min/max
    # on the host's widest vectors (ymm with AVX2, zmm with AVX-512) and the staging copy's
    # software prefetch. Fails if a code change stops LLVM vectorising the compute loop or
    # drops the prefetch. Compiled in memory: numba cannot show the machine code of a
    # kernel loaded from its disk cache.
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker))
    monkeypatch.setattr(fast, "_UNROLLED", {})
    nt = 9  # the network is checked above; a short history compiles faster
    h, img = _history(nt, seed=10, nx=64)
    # 2 x 8 x 64 floats a date: a 4 KiB date stride aliases, so this contiguous history
    # goes through the staging kernel; its padded copy is read in place.
    h, img = np.ascontiguousarray(h[:, :, :8]), np.ascontiguousarray(img[:, :8])
    assert fast._aliases(h.strides[0], nt) and not fast._aliases(fast._padded(h).strides[0], nt)
    for inplace, hist in ((False, h), (True, fast._padded(h))):
        np.testing.assert_array_equal(_fused(hist, img), _reference(h, img))
        kernel = fast._UNROLLED[(nt, inplace)]
        _check_asm(kernel.inspect_asm(kernel.signatures[0]), nt)


def _check_asm(asm: str, nt: int) -> None:
    # The width LLVM chose for numba's target CPU: its tuning, not only the ISA, decides
    # (zmm on Zen 4; ymm on AVX2 and on Intel AVX-512 cores, which LLVM tunes for 256 bits).
    def minmax_on(r):
        return sum(1 for ln in asm.splitlines() if ("vminps" in ln or "vmaxps" in ln) and r in ln)

    need = 2 * len(fast.best_network(nt))
    # The widest registers holding a whole network (a narrower copy of the loop may
    # exist too: LLVM's epilogue for the remainder).
    reg = next((r for r in ("zmm", "ymm", "xmm") if minmax_on(r) >= need), "none")
    assert reg != "none", "the sorting network is not vectorised"
    lanes = {"xmm": 4, "ymm": 8, "zmm": 16}[reg]
    # The compute loop runs _CHUNK pixels at a time: a chunk shorter than one wide vector
    # runs in LLVM's narrow epilogue instead (8-pixel chunks ran 4-lane xmm code on Zen 4).
    assert fast._CHUNK % lanes == 0, (fast._CHUNK, lanes)
    wide_minmax = [ln for ln in asm.splitlines() if ("vminps" in ln or "vmaxps" in ln) and reg in ln]
    # Fast paths: one min and one max per comparator, plus the MAD pick; as int32
    # (vpminsd/vpmaxsd) for sign-clear blocks, as float32 for the others.
    assert len(wide_minmax) >= 2 * len(fast.best_network(nt)), len(wide_minmax)
    wide_int = [ln for ln in asm.splitlines() if ("vpminsd" in ln or "vpmaxsd" in ln) and reg in ln]
    # At least two int32 networks: the sign-clear fast path and the sign-clear general path.
    assert len(wide_int) >= 4 * len(fast.best_network(nt)), len(wide_int)
    assert "prefetcht2" in asm
    # The non-finite and sign counts run in int32 lanes of wide registers: an int64
    # count (numba's default integer) widens each 4 values with vpmovzxdq into 64-bit lanes.
    assert re.search(rf"vp(add|sub)d\s.*{reg}", asm)
    assert "vpmovzxdq" not in asm and "vpaddq" not in asm


def test_staging_tile_fits_l2():
    # Tile + the next tile's prefetched lines within 60 % of L2: 2048 pixels for 19
    # dates on a 512 KiB L2 (Zen 3), 4096 on 1 MiB (Zen 4), never below 1024.
    assert fast._stage(19, 512 << 10) == 2048
    assert fast._stage(19, 1 << 20) == 4096
    assert fast._stage(32, 256 << 10) == 1024
    assert fast._stage(2, 64 << 20) == fast._STAGE


def test_offpath_intrinsic_matches_numpy():
    # The staging copy's test for the general path: NaN (any payload, either sign), +-inf
    # and magnitudes from 2**127 up (whose median sum could overflow); the largest value
    # below 2**127, subnormal and signed zero values stay on the fast path.
    import numba

    @numba.njit
    def flags(a):
        out = np.empty(a.size, dtype=np.int32)
        total = np.int32(0)
        for i in range(a.size):
            out[i] = fast._offpath(a[i])
            total = fast._add32(total, out[i])
        return out, total

    special = np.array([np.nan, -np.nan, np.inf, -np.inf, np.finfo(np.float32).max, -np.finfo(np.float32).max,
                        np.finfo(np.float32).tiny / 4, -0.0, 0.0, 1.0], dtype=np.float32)
    payload = np.array([0x7F800001, 0xFFC00123, 0x7F7FFFFF, 0xFF800000, 0x7F000000, 0xFEFFFFFF, 0x7EFFFFFF],
                       dtype=np.uint32).view(np.float32)
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2**32, size=20000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    a = np.concatenate([special, payload, bits])
    got, total = flags(a)
    with np.errstate(invalid="ignore"):
        want = ~(np.abs(a) < np.float32(2.0**127))  # NaN compares False
    np.testing.assert_array_equal(got, want.astype(np.int32))
    assert total == np.count_nonzero(want) > np.count_nonzero(~np.isfinite(a)) > 0


def test_unwritable_cache_compiles_in_memory(tmp_path, monkeypatch, kernel_layout):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker))
    monkeypatch.setattr(fast, "_UNROLLED", {})
    h, img = _history(2, seed=8, nx=20)
    np.testing.assert_array_equal(_fused(h, img), _reference(h, img))
    assert set(fast._UNROLLED) == {(2, kernel_layout == "in place")}


def test_staging_tiles_and_non_finite_history():
    # A row wider than one staging tile (tile edges inside a 256-pixel block, a short
    # last tile) with a NaN date only in the second tile, and +-inf dates: every
    # non-finite value sends its block to the general path, which must equal numpy.
    nt = 19
    stage = fast._stage(nt)
    nx = stage + 300
    h, img = _history(nt, seed=9, nx=nx)
    h[:, :, :2] = np.random.default_rng(9).normal(0.2, 0.02, size=(nt, 2, 2, nx)).astype(np.float32)
    h[5, 0, 0, stage + 17] = np.nan
    h[2, 1, 0, 40] = np.inf
    h[7, 1, 1, stage + 290] = -np.inf
    got = _fused(h, img)
    np.testing.assert_array_equal(got, _reference(h, img))
    # Clear pixels are unaffected by a non-finite neighbour in their block.
    clear = h.copy()
    clear[5, 0, 0, stage + 17] = 0.2
    z_clear = _fused(clear, img)
    keep = np.ones(nx, bool)
    keep[stage + 17] = False
    np.testing.assert_array_equal(got[0, 0, keep], z_clear[0, 0, keep])


def test_fast_and_general_paths_agree_on_signs_zeros_and_extremes():
    # Two paths per block: finite values (the sorting network) and non-finite values.
    # Signed zeros, negative values, ties across zero and the largest finite magnitudes
    # must give the numpy result bit for bit on each, and a pixel its z whatever path its
    # block takes.
    nt, nx = 19, 300
    rng = np.random.default_rng(12)
    h = rng.normal(0.2, 0.05, size=(nt, 2, 6, nx)).astype(np.float32)
    img = rng.normal(0.2, 0.1, size=(2, 6, nx)).astype(np.float32)
    h[:, :, 1] -= np.float32(0.2)  # about half the values negative
    h[:, :, 2, :40] = np.float32(0.0)  # ties at +0, and at -0 below
    h[:, 1, 2, :40] = np.float32(-0.0)
    h[::2, 0, 3, :40] = np.float32(-0.0)  # +0 and -0 mixed in one pixel
    h[:, :, 4, :40] = np.round(h[:, :, 4, :40] - 0.2, 1)  # ties around zero
    h[:, 0, 5, :20] = np.float32(3.4e38)  # largest magnitudes, both signs
    h[:9, 1, 5, :20] = np.float32(-3.4e38)
    np.testing.assert_array_equal(_fused(h, img), _reference(h, img))
    # The same positive pixels in a block of their own, next to a negative value, and
    # next to a NaN (general path).
    pos = np.abs(h[:, :1, :1]) + np.float32(0.01)
    zs = []
    for other in (0.3, -0.3, np.nan):
        v = pos.copy()
        v[7, 0, 0, 5] = other
        zs.append(_fused(v, img[:1, :1]))
        np.testing.assert_array_equal(zs[-1], _reference(v, img[:1, :1]))
    keep = np.arange(nx) != 5
    np.testing.assert_array_equal(zs[1][..., keep], zs[0][..., keep])
    np.testing.assert_array_equal(zs[2][..., keep], zs[0][..., keep])


def test_pruned_merger_keeps_the_ranks_the_pick_reads():
    # The general path prunes the bitonic merger to the ranks its MAD pick reads (0..nt//2).
    # Pruned and whole merger agree there on every V-shaped 0/1 sequence and on random
    # V-shaped floats with +inf tails (invalid dates); the fast path's sort prunes nothing.
    rng = np.random.default_rng(13)
    for n in (2, 5, 8, 19, 32):
        keep = range(n // 2 + 1)
        pruned, whole = fast.prune_network(fast.bitonic_merger(n), keep), fast.bitonic_merger(n)
        seqs = [np.r_[np.ones(a), np.zeros(n - a - b), np.ones(b)] for a in range(n + 1) for b in range(n + 1 - a)]
        floats = []
        for _ in range(200):
            k = rng.integers(0, n + 1)
            d = np.abs(np.sort(rng.normal(size=k)) - rng.normal())
            floats.append(np.r_[d, np.full(n - k, np.inf)])
        for v0 in (np.asarray(seqs), np.asarray(floats)):
            outs = []
            for net in (pruned, whole):
                v = v0.copy()
                for i, j in net:
                    v[:, i], v[:, j] = np.minimum(v[:, i], v[:, j]), np.maximum(v[:, i], v[:, j])
                outs.append(v[:, list(keep)])
            np.testing.assert_array_equal(outs[0], outs[1])
        if n == 19:
            assert len(pruned) < len(whole)
    full = fast.best_network(19)
    assert len(fast.prune_network(full, range(19))) == len(full)
    assert len(fast.prune_network(full, [9])) < len(full)  # the check can drop comparators


def test_a_zero_mad_from_zeros_of_both_signs_is_positive():
    # Sorted values 1e-45, +0, -0, +0, 2.8e-45 (bit patterns 1, 0, 0x80000000, 0, 2): the
    # deviations med - s of zeros of opposite sign are -0.0; with a floor that rounds to 0
    # in float32, max(-0.0 MAD, +0 floor) kept -0.0 and z came out -inf where numpy's
    # (always +0) MAD gives +inf. The kernel takes abs of the MAD.
    import xarray as xr

    from changedet.kernels import baseline_zscore, robust_baseline, zscore

    h = np.array([1, 0, 0x80000000, 0, 2], dtype=np.uint32).view(np.float32).reshape(5, 1, 1, 1)
    h = np.broadcast_to(h, (5, 1, 1, 40)).copy()
    img = np.ones((1, 1, 40), np.float32)
    H, I = xr.DataArray(h, dims=("time", "band", "y", "x")), xr.DataArray(img, dims=("band", "y", "x"))
    with np.errstate(all="ignore"):
        ref = zscore(I, robust_baseline(H), mad_floor=1e-46).values
        got = baseline_zscore(H, I, mad_floor=1e-46, use_numba=True).values
    assert np.array_equal(np.signbit(ref), np.signbit(got)) and np.array_equal(ref, got)


@pytest.mark.parametrize("nx", [300, 37])
def test_general_path_int_and_float_sorts_agree(nx):
    # A block with a NaN, infinite or huge value takes the general path; with no sign bit
    # set anywhere in it, it sorts the int32 bit patterns (NaN clamped to +inf's bits),
    # else the floats. Positive NaN, +inf, magnitudes >= 2**127, subnormals, +0 ties and
    # all-invalid pixels on the int sort must give numpy's result bit for bit, and each
    # pixel the same z as when a negative NaN or a -0.0 elsewhere in the block sends it
    # to the float sort. Widths: a full block plus a partial one, and less than a block
    # (neither a multiple of the 32-pixel compute chunk).
    nt = 19
    rng = np.random.default_rng(14)
    h = rng.normal(0.2, 0.05, size=(nt, 1, 1, nx)).astype(np.float32)
    img = rng.normal(0.2, 0.1, size=(1, 1, nx)).astype(np.float32)
    h[3, 0, 0, ::3] = np.nan  # a cloudy date on a third of the pixels
    h[:, 0, 0, 1] = np.nan  # no valid date
    h[:12, 0, 0, 2] = np.nan  # 7 valid dates
    h[5, 0, 0, 4] = np.inf  # +inf among finite values
    h[:10, 0, 0, 5] = np.inf  # +inf the median
    h[:, 0, 0, 7] = np.float32(3e38)  # >= 2**127: the median's sum overflows to +inf
    h[:9, 0, 0, 8] = np.float32(3.4e38)
    h[:, 0, 0, 10] = np.float32(1e-40)  # subnormal ties
    h[::2, 0, 0, 11] = np.float32(0.0)  # +0 ties
    h[:, 0, 0, 13] = np.uint32(0x7FC01234).view(np.float32)  # NaN with a payload
    h[2:8, 0, 0, 14] = np.float32(np.finfo(np.float32).tiny / 8)
    assert not np.signbit(h).any()
    with np.errstate(invalid="ignore", over="ignore"):
        ref = _reference(h, img)
    got = _fused(h, img)
    np.testing.assert_array_equal(got, ref)
    # The same pixels with one value elsewhere in the block that has its sign bit set.
    other = nx - 1
    keep = np.arange(nx) != other
    for v in (np.uint32(0xFFC00000).view(np.float32), np.float32(-0.0)):
        g = h.copy()
        g[6, 0, 0, other] = v
        with np.errstate(invalid="ignore", over="ignore"):
            np.testing.assert_array_equal(_fused(g, img), _reference(g, img))
        np.testing.assert_array_equal(_fused(g, img)[..., keep], got[..., keep])


@pytest.mark.parametrize("nt", [1, 5, 19, 32])
def test_next_tile_prefetch_covers_every_line_once(nt):
    # The compute prefetches the next tile in chunks of two runs of consecutive lines: run
    # the generated address code for every chunk of a full tile and check it names every
    # cache line (_PF_STEP floats) of every date of the next tile exactly once, and nothing
    # outside it. A wrong address only costs speed, so this is where it would show.
    import textwrap

    src = fast._kernel_source(nt)
    lines = src.splitlines()
    a = next(i for i, ln in enumerate(lines) if ln.strip().startswith("j0 = (i0 + c0)"))
    b = next(i for i in range(a, len(lines)) if lines[i].strip().startswith("for x in range("))
    code = compile(textwrap.dedent("\n".join(lines[a:b])), "<prefetch>", "exec")
    stage = fast._stage(nt)
    plane, pnext, p2 = 1 << 40, 12345 * stage, 54321 * stage
    lines = [t * plane + q for t in range(nt) for q in range(0, stage, fast._PF_STEP)]  # date-major
    # sh = 0: the next tile (staged after this compute). sh = one block of every date:
    # the next tile from its second block's share on (it is copied a block behind the
    # prefetch during this compute), then the first share of the tile after it.
    shift = nt * fast._BLOCK // fast._PF_STEP
    for sh, want in ((0, [pnext + a for a in lines]),
                     (shift, [pnext + a for a in lines[shift:]] + [p2 + a for a in lines[:shift]])):
        got = []
        ns = {"_prefetch": lambda arr, i: got.append(i), "plane": plane, "pnext": pnext, "p2": p2, "sh": sh,
              "hf": None, "min": min}
        for i0 in range(0, stage, fast._BLOCK):
            for c0 in range(0, fast._BLOCK, fast._CHUNK):
                exec(code, dict(ns, i0=i0, c0=c0))
        assert sorted(got) == sorted(want)
        assert len(got) == len(want) == nt * stage // fast._PF_STEP


@pytest.mark.parametrize("nt,extra", [(19, 0), (19, 100), (5, 0)])
def test_next_tile_staged_during_compute(nt, extra):
    # Rows of full staging tiles stage the next tile (also the next row's first) into the
    # second buffer during the compute; a narrow tile, a call's last tile and a row split
    # between threads do not. Off-path values, NaN and negative values in tiles staged
    # either way must give numpy's result, whatever the split into calls.
    stage = fast._stage(nt)
    nx = 2 * stage + extra
    rng = np.random.default_rng(15)
    h = rng.normal(0.2, 0.02, size=(nt, 2, 3, nx)).astype(np.float32)
    img = rng.normal(0.2, 0.05, size=(2, 3, nx)).astype(np.float32)
    h[1, 0, 0, stage + 300:stage + 310] = np.nan  # second tile of a row: general path
    h[2, 0, 1, 5] = np.inf  # first tile of the next row (staged during the row before)
    h[:, 1, 0, stage + 40] -= np.float32(0.5)  # negative values: float network
    h[3, 1, 2, nx - 1] = -np.inf  # the last tile of the last row
    h[:, 0, 2, :] = np.nan  # a row with no valid date
    with np.errstate(invalid="ignore"):
        ref = _reference(h, img)
    for threads in (1, 2, 3):
        np.testing.assert_array_equal(_fused(h, img, threads=threads), ref)
    # One call per row: the next row's first tile lies outside the call, so it is not staged.
    for b in range(2):
        for y in range(3):
            np.testing.assert_array_equal(_fused(h[:, b:b + 1, y:y + 1], img[b:b + 1, y:y + 1]),
                                          ref[b:b + 1, y:y + 1])
