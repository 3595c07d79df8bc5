//! The integer GEMM's microkernels on bytes laid out 4 `k` a column (issue 16): `vpdpbusd`
//! multiplies unsigned by signed bytes four at a time and adds the four products to an i32
//! lane, with no saturation, so one instruction does what `vpmaddwd` + `vpaddd` do for two
//! pairs in the AVX2 i16 kernel. AVX-512 VNNI and AVX-VNNI have it; on AVX2 the same layout
//! and kernel take it as `vpmaddubsw` (pairs of u8 x s8 products summed to i16, saturating) +
//! `vpmaddwd` by ones + `vpaddd`, for Q4_0 / Q4_1 weights only: their unsigned nibbles (at
//! most 15) times signed input values (at most 128 in magnitude) keep every pair sum under
//! 2 x 15 x 128 = 3,840, so nothing saturates and the sums are `vpdpbusd`'s exact integers.
//! Q8_0's unsigned weights (`q + 128`, up to 255) against the signed input could saturate,
//! so AVX2 multiplies Q8_0 with the i16 kernel instead.
//!
//! Layout (every level): per panel and block, 8 steps of 4 `k`; a step is 64 bytes,
//! column `c`'s four values at bytes `4c..4c + 4` (columns 0-7 in the first 32 bytes, which
//! is what an AVX-VNNI ymm register takes). Q8_0 stores `q + 128` as unsigned bytes; Q4_0
//! stores nibbles `q + 8`, steps `2j` (low nibble) and `2j + 1` (high) in the same 64 bytes,
//! so a layer still takes half a byte a value.
//!
//! The unsigned operand is the weight, `q + o` (`o` = 128 for Q8_0, 0..=255; `o` = 8 for
//! Q4_0, 0..=15), against the signed input bytes, and each row's block sum starts from
//! `-o · Σ q_x`. Either way a block's sum is the exact integer `Σ q_w q_x` (at most
//! 32 x 255 x 128 in magnitude before the correction, far inside i32), scaled into the f32
//! accumulators exactly as the AVX2 i16 kernel scales its own (the ymm kernels share
//! `scale_block`). The input as the signed operand is what lets its four bytes ride in the
//! instruction as a broadcast memory operand (`{1to16}`); as the unsigned one (Q8_0 until
//! session 21: input `q + 128`, weights signed, `128 · Σ q_w` per column taken off) each
//! step of a 12-row tile also took twelve separate broadcasts, and Q8_0 ran 4-7% slower than
//! Q4_0 on one layer (Zen 5).

#[cfg(target_arch = "x86_64")]
use super::{super::sgemm::Init, NR, PREFETCH_BLOCKS};
use super::{BlockFormat, IntLevel, QTile, QK};

/// Input rows per AVX-512 VNNI microkernel call: 8 i32 sums, 8 f32 accumulators and the
/// block's 8 weight vectors (which the compiler loads together at the block's start) fit the
/// 32 zmm registers. 12 rows, as until session 22, left no room and spilled 9 accumulators
/// to the stack every block: 8 rows gave 10-15% more GOP/s on one layer at 128 and 1,024 rows
/// (6, 9 and 10 rows measured too: none better; Zen 5). [`tile`] instantiates 1 to 8 rows.
pub(super) const MR_512: usize = 8;
const _: () = assert!(
    MR_512 == 8,
    "tile() lists the AVX-512 VNNI kernel's row counts up to 8"
);

/// Input rows per AVX2 microkernel call: with 4 rows, 8 i32 sums, two weight vectors, the
/// broadcast input, the ones and the nibble mask fit the 16 ymm registers; 6 rows spill
/// (4 rows gave 3-8% more GMAC/s than 6 and 2-5% more than 5 on Q4_0 BERT-base products,
/// AMD EPYC Zen 3). [`tile`] instantiates the kernel for 1 to 4 rows.
pub(super) const MR_AVX2: usize = 4;
const _: () = assert!(
    MR_AVX2 == 4,
    "tile() lists the AVX2 kernel's row counts up to 4"
);

/// Input rows per AVX-VNNI microkernel call for Q4_0 / Q4_1 nibbles: as for [`MR_AVX2`], the
/// raw weight vectors, their nibbles and the mask take five registers next to the sums, so 6
/// rows (Q8_0's tile at this level, [`super::MR`]) spilled sums inside the step loop (84
/// stack references per block, `scripts/kernel-spills.py`); 4 rows gave 1.18-1.24x the GOP/s
/// of 6 and 1.03-1.07x of 5 on one layer (768 -> 3072, 16 and 128 rows, Zen 5 at
/// `HARNESS_KERNELS=avxvnni`; Q8_0 there gained nothing from fewer rows). [`tile`]
/// instantiates 1 to 4 rows.
pub(super) const MR_256_Q4: usize = 4;
const _: () = assert!(
    MR_256_Q4 == 4,
    "tile() lists the AVX-VNNI Q4 kernel's row counts up to 4"
);

/// Write one block of column `col` (its 32 values `qs`) into the panel's block `dst`.
pub(super) fn lay_out_block(format: BlockFormat, qs: &[i8; QK], col: usize, dst: &mut [i8]) {
    for (kk, &q) in qs.iter().enumerate() {
        let (step, lane) = (kk / 4, kk % 4);
        match format {
            BlockFormat::Q8_0 => dst[step * 64 + col * 4 + lane] = (q as u8 ^ 0x80) as i8,
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                let nibble = ((q + 8) as u8) << (4 * (step % 2));
                dst[(step / 2) * 64 + col * 4 + lane] |= nibble as i8;
            }
        }
    }
}

/// Run the kernel of `level` for a tile of `r` rows, fetching the weights ahead if `FETCH`
/// (`super::prefetch_weights`).
///
/// # Safety
/// The CPU has `level`; the tile's pointers cover what it states (bytes, not i16 values).
pub(super) unsafe fn tile<const FETCH: bool>(
    level: IntLevel,
    format: BlockFormat,
    r: usize,
    t: &QTile,
) {
    macro_rules! rows {
        ($kernel:ident, $q4:literal, [$($n:literal),*]) => {
            match r {
                $($n => $kernel::<$n, $q4, FETCH>(t),)*
                _ => $kernel::<1, $q4, FETCH>(t),
            }
        };
    }
    match (level, format) {
        (IntLevel::Avx512Vnni, BlockFormat::Q8_0) => {
            rows!(kernel_512, false, [8, 7, 6, 5, 4, 3, 2])
        }
        (IntLevel::Avx512Vnni, BlockFormat::Q4_0 | BlockFormat::Q4_1) => {
            rows!(kernel_512, true, [8, 7, 6, 5, 4, 3, 2])
        }
        (IntLevel::AvxVnni, BlockFormat::Q8_0) => rows!(kernel_256, false, [6, 5, 4, 3, 2]),
        (IntLevel::AvxVnni, BlockFormat::Q4_0 | BlockFormat::Q4_1) => {
            rows!(kernel_256, true, [4, 3, 2])
        }
        (IntLevel::Avx2, BlockFormat::Q8_0) => {
            unreachable!("Q8_0 on AVX2 is laid out for the i16 kernel")
        }
        (IntLevel::Avx2, BlockFormat::Q4_0 | BlockFormat::Q4_1) => match r {
            4 => kernel_avx2::<4, FETCH>(t),
            3 => kernel_avx2::<3, FETCH>(t),
            2 => kernel_avx2::<2, FETCH>(t),
            _ => kernel_avx2::<1, FETCH>(t),
        },
    }
}

/// Independent accumulator chains for a tile of `rows` rows: enough to cover `vpdpbusd`'s
/// latency (about 5 cycles at up to 2 a cycle) without running out of registers.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const fn chains_for(rows: usize) -> usize {
    if rows >= 8 {
        1
    } else if rows >= 4 {
        2
    } else {
        4
    }
}

/// [`chains_for`] for the ymm kernel, whose rows take two sums each in a file of 16 registers
/// (two weight vectors and the broadcast input take three more): from 4 rows on one chain
/// already has 8 or more independent `vpdpbusd`s a step.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const fn chains_for_ymm(rows: usize) -> usize {
    match rows {
        1 => 4,
        2 => 3,
        3 => 2,
        _ => 1,
    }
}

/// Fetch the first `rows` rows' input block `b + PREFETCH_BLOCKS` (32 bytes, one line each):
/// a row block's bytes live in L2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_rows(t: &QTile, rows: usize, b: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for i in 0..rows {
        // Prefetches never fault; the address is formed with wrapping arithmetic.
        let line = t.bytes.wrapping_add(i * t.lda + (b + PREFETCH_BLOCKS) * QK);
        _mm_prefetch::<_MM_HINT_T0>(line as *const i8);
    }
}

/// What the laid-out weight values exceed the format's values by: 8 for Q4_0's nibbles, 128
/// for Q8_0's unsigned bytes (`format` as the kernels take it: Q4_1 is laid out as Q4_0).
pub(super) fn weight_offset(format: BlockFormat) -> i32 {
    match format {
        BlockFormat::Q8_0 => 128,
        BlockFormat::Q4_0 | BlockFormat::Q4_1 => 8,
    }
}

/// Fetch the next tile's output rows (a panel's 16 values, one or two lines each).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_next_outputs(t: &QTile) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for i in 0..t.next.1 {
        // Prefetches never fault; the addresses are formed with wrapping arithmetic.
        let c = t.next.0.wrapping_add(i * t.ldc) as *const i8;
        _mm_prefetch::<_MM_HINT_T0>(c);
        _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(NR * 4 - 1));
    }
}

/// One row's four input bytes at `k = at`, broadcast as an i32.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn four_bytes(t: &QTile, row: usize, at: usize) -> i32 {
    std::ptr::read_unaligned(t.bytes.add(row * t.lda + at) as *const i32)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel_512<const R: usize, const Q4: bool, const FETCH: bool>(t: &QTile) {
    use std::arch::x86_64::*;
    prefetch_next_outputs(t);
    let mask = ((1u32 << t.width) - 1) as __mmask16;
    let mut acc = [_mm512_setzero_ps(); R];
    match t.init {
        Init::Zero => {}
        Init::Bias => acc = [_mm512_loadu_ps(t.bias.as_ptr()); R],
        Init::Accumulate => {
            for (i, row) in acc.iter_mut().enumerate() {
                *row = _mm512_maskz_loadu_ps(mask, t.c.add(i * t.ldc));
            }
        }
    }
    let low = _mm512_set1_epi8(0x0f);
    let block_bytes = if Q4 { QK * NR / 2 } else { QK * NR };
    let (mut w, mut ws) = (t.w, t.ws);
    for b in 0..t.blocks {
        prefetch_rows(t, R, b);
        if FETCH {
            super::prefetch_weights(w, block_bytes, ws);
        }
        // `vpdpbusd` adds into its accumulator (a 4-5 cycle chain): few rows get several
        // chains of steps, summed at the end (exact integers, so the result is unchanged).
        // The first chain starts from the row's correction, `-o Σ q_x`, instead of zero.
        let mut chains = [[_mm512_setzero_si512(); R]; 4];
        for (i, sum) in chains[0].iter_mut().enumerate() {
            *sum = _mm512_set1_epi32(*t.corrections.add(i * t.ldd + b));
        }
        if Q4 {
            for pair in 0..QK / 8 {
                let v = _mm512_loadu_si512(w.add(pair * 64) as *const _);
                let halves = [
                    _mm512_and_si512(v, low),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(v), low),
                ];
                for (h, &wv) in halves.iter().enumerate() {
                    let step = 2 * pair + h;
                    let at = b * QK + step * 4;
                    for (i, sum) in chains[step % chains_for(R)].iter_mut().enumerate() {
                        let x = _mm512_set1_epi32(four_bytes(t, i, at));
                        *sum = _mm512_dpbusd_epi32(*sum, wv, x);
                    }
                }
            }
        } else {
            for step in 0..QK / 4 {
                let wv = _mm512_loadu_si512(w.add(step * 64) as *const _);
                let at = b * QK + step * 4;
                for (i, sum) in chains[step % chains_for(R)].iter_mut().enumerate() {
                    let x = _mm512_set1_epi32(four_bytes(t, i, at));
                    *sum = _mm512_dpbusd_epi32(*sum, wv, x);
                }
            }
        }
        let mut sums = chains[0];
        for chain in &chains[1..chains_for(R)] {
            for (sum, &c) in sums.iter_mut().zip(chain) {
                *sum = _mm512_add_epi32(*sum, c);
            }
        }
        let d = _mm512_loadu_ps(ws);
        for (i, (row, sum)) in acc.iter_mut().zip(&sums).enumerate() {
            let dx = _mm512_set1_ps(*t.d.add(i * t.ldd + b));
            *row = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*sum), _mm512_mul_ps(dx, d), *row);
        }
        w = w.add(block_bytes);
        ws = ws.add(NR);
    }
    if t.gelu {
        acc = super::super::ops::gelu_on_zmm_tile([acc])[0];
    }
    for (i, &row) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(t.c.add(i * t.ldc), mask, row);
    }
}

/// The AVX-VNNI kernel: `R` rows by one panel, `vpdpbusd` on ymm registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn kernel_256<const R: usize, const Q4: bool, const FETCH: bool>(t: &QTile) {
    body_256::<R, Q4, false, FETCH>(t)
}

/// The AVX2 kernel, for Q4_0 / Q4_1 nibbles only (Q8_0's unsigned input bytes could saturate
/// `vpmaddubsw`; see the module doc): [`kernel_256`] with `vpdpbusd` taken as `vpmaddubsw` +
/// `vpmaddwd` by ones + `vpaddd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2<const R: usize, const FETCH: bool>(t: &QTile) {
    body_256::<R, true, true, FETCH>(t)
}

/// The ymm kernels' body, inlined into each so that it is compiled for that kernel's features:
/// `SPLIT` takes each `vpdpbusd` as its AVX2 instruction pair.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn body_256<const R: usize, const Q4: bool, const SPLIT: bool, const FETCH: bool>(
    t: &QTile,
) {
    use super::super::sgemm::load_output_row;
    use std::arch::x86_64::*;
    prefetch_next_outputs(t);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    match t.init {
        Init::Zero => {}
        Init::Bias => acc = [load_output_row(t.bias.as_ptr(), NR); R],
        Init::Accumulate => {
            for (i, row) in acc.iter_mut().enumerate() {
                *row = load_output_row(t.c.add(i * t.ldc), t.width);
            }
        }
    }
    let low = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let dot = |sum: __m256i, u: __m256i, s: __m256i| {
        if SPLIT {
            _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones))
        } else {
            _mm256_dpbusd_avx_epi32(sum, u, s)
        }
    };
    // `vpmaddubsw` + `vpmaddwd` feed a one-cycle `vpaddd`: one chain is enough (and more
    // would not fit the registers).
    let nchains = if SPLIT { 1 } else { chains_for_ymm(R) };
    let block_bytes = if Q4 { QK * NR / 2 } else { QK * NR };
    let (mut w, mut ws) = (t.w, t.ws);
    for b in 0..t.blocks {
        prefetch_rows(t, R, b);
        if FETCH {
            super::prefetch_weights(w, block_bytes, ws);
        }
        // The first chain starts from the row's correction, as in `kernel_512`.
        let mut chains = [[[_mm256_setzero_si256(); 2]; R]; 4];
        for (i, sum) in chains[0].iter_mut().enumerate() {
            *sum = [_mm256_set1_epi32(*t.corrections.add(i * t.ldd + b)); 2];
        }
        if Q4 {
            for pair in 0..QK / 8 {
                let v0 = _mm256_loadu_si256(w.add(pair * 64) as *const __m256i);
                let v1 = _mm256_loadu_si256(w.add(pair * 64 + 32) as *const __m256i);
                for h in 0..2 {
                    let nibbles = |v: __m256i| {
                        if h == 0 {
                            _mm256_and_si256(v, low)
                        } else {
                            _mm256_and_si256(_mm256_srli_epi16::<4>(v), low)
                        }
                    };
                    let (w0, w1) = (nibbles(v0), nibbles(v1));
                    let step = 2 * pair + h;
                    let at = b * QK + step * 4;
                    for (i, sum) in chains[step % nchains].iter_mut().enumerate() {
                        let x = _mm256_set1_epi32(four_bytes(t, i, at));
                        sum[0] = dot(sum[0], w0, x);
                        sum[1] = dot(sum[1], w1, x);
                    }
                }
            }
        } else {
            for step in 0..QK / 4 {
                let w0 = _mm256_loadu_si256(w.add(step * 64) as *const __m256i);
                let w1 = _mm256_loadu_si256(w.add(step * 64 + 32) as *const __m256i);
                let at = b * QK + step * 4;
                for (i, sum) in chains[step % nchains].iter_mut().enumerate() {
                    let x = _mm256_set1_epi32(four_bytes(t, i, at));
                    sum[0] = dot(sum[0], w0, x);
                    sum[1] = dot(sum[1], w1, x);
                }
            }
        }
        let mut sums = chains[0];
        for chain in &chains[1..nchains] {
            for (sum, c) in sums.iter_mut().zip(chain) {
                sum[0] = _mm256_add_epi32(sum[0], c[0]);
                sum[1] = _mm256_add_epi32(sum[1], c[1]);
            }
        }
        super::scale_block(&mut acc, &sums, t, ws, b);
        w = w.add(block_bytes);
        ws = ws.add(NR);
    }
    super::finish_tile(t, &mut acc);
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel_512<const R: usize, const Q4: bool, const FETCH: bool>(_: &QTile) {
    unreachable!("Int8Weight is never built off x86-64")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel_256<const R: usize, const Q4: bool, const FETCH: bool>(_: &QTile) {
    unreachable!("Int8Weight is never built off x86-64")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel_avx2<const R: usize, const FETCH: bool>(_: &QTile) {
    unreachable!("Int8Weight is never built off x86-64")
}
