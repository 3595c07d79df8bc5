//! Integer matrix products for linear layers whose weights are Q8_0, Q4_0 or Q4_1 blocks,
//! `y = x Wᵀ + b`, with the weight laid out once at load (issue 6).
//!
//! Why: candle multiplies quantized weights one (row, column) dot product at a time, which on
//! this AVX2 host ran far below the f32 GEMM; unpacking the blocks to f32 for every call
//! (the previous many-rows path) made a Q8_0 model slower than its f32 original.
//!
//! The arithmetic is ggml's (and so candle's) quantized dot product, unchanged: each input row
//! is rounded to Q8_0 blocks of 32 values (`d = amax / 127` kept as f16, `q = round(x / d)`),
//! and an output is `b + Σ_blocks (d_w · d_x) · Σ_32 q_w q_x`, the inner sum in integers
//! (exact), the outer in f32. Only the order of the f32 additions differs from candle's
//! (tested against candle's kernel and against an f64 reference of the same blocks).
//!
//! Layout of Q8_0 weights for AVX2 without VNNI:
//!
//! - the weight `(n, k)` is stored in panels of [`NR`] = 16 output columns; for each block of
//!   32 `k` and each step of 2 `k`, a panel holds 32 int8 values: columns 0-7 then 8-15, each
//!   column's 2 values side by side. The blocks' scales sit in a separate array, 16 f32 per
//!   panel and block (f16 converted once, at load);
//! - the input is rounded to Q8_0 once per call (in parallel over rows) into two row-major
//!   arrays: the values as i16 and the block scales. The kernel broadcasts 2 values of a row
//!   at a time straight from them; there is no packing pass over the input;
//! - a 6 x 16 microkernel: per step, two sign-extending loads of weights (`vpmovsxbw`, 8
//!   columns x 2 `k` as i16 each), then per row one broadcast and two `vpmaddwd` (16
//!   multiply-adds each, pairs summed to i32) and two `vpaddd`. Each block's i32 sums become
//!   f32 and are scaled into the f32 accumulators.
//!
//! Q4_0 (and Q4_1) weights on AVX2 take the VNNI levels' layout and kernel instead (below),
//! with `vpdpbusd` done as `vpmaddubsw` + `vpmaddwd` by ones + `vpaddd`: their unsigned
//! nibbles (at most 15) times signed input bytes (at most 128 in magnitude) give pair sums
//! far below `vpmaddubsw`'s i16 saturation, so the sums are the same exact integers and the
//! results the same bits. Per row and 32 multiply-adds that is three instructions; the i16
//! form spent four (two `vpmaddwd`, two `vpaddd`) after widening every step's nibbles to i16
//! (`vpand`, `vpsrlw`, two `vpmovzxbw`): 1.5-2x the GMAC/s (BENCHMARKS.md, session 20). Q8_0
//! cannot: its signed-by-signed bytes, one side made unsigned, can saturate.
//!
//! Why Q8_0 takes `vpmaddwd` on i16 rather than the usual `vpsignb` + `vpmaddubsw` +
//! `vpmaddwd` on bytes: on this host `vpsignb`, `vpmaddubsw` and `vpmaddwd` all issue on the
//! same two pipes (two per cycle in any mix), so the byte sequence spends three of those slots
//! per 32 multiply-adds and i16 two; in the kernel both ran at the same speed, and i16 needs
//! neither a copy of the input's magnitudes nor a special case for -128. Either way AVX2
//! without VNNI gives integers about what two f32 FMA pipes give floats: the gain over the f32
//! GEMM is the weight traffic (a quarter), which is what one-row products (generation) are
//! bound by (BENCHMARKS.md, "Integer GEMM").
//!
//! With VNNI (AVX-512 VNNI or AVX-VNNI, chosen at run time by [`super::isa`]) the weight is
//! laid out with 4 `k` per column side by side instead and multiplied by `vpdpbusd` (u8 x s8,
//! four products summed into i32, no saturation) in `quads`: one instruction per 64 (zmm)
//! or 32 (ymm) multiply-adds. One operand must be unsigned: the weights, laid out as `q + 128`
//! for Q8_0 and as nibbles `q + 8` for Q4_0, against the signed input bytes, and each row's
//! block sum starts from `-128` (or `-8`) times the input block's sum (so the input's bytes
//! can ride in the instruction as a broadcast memory operand). The block sums are the same
//! exact integers as the AVX2 kernels' and are scaled in the same order, so every level gives
//! the same bits (tested): ggml's Q8_0 arithmetic is kept, not approximated.
//!
//! A row's result does not depend on its batch (tested bit for bit). Runs where the f32
//! kernels run (AVX2 and FMA, checked at run time); elsewhere layers stay on candle.

mod quads;

use std::mem::MaybeUninit;

use super::isa::{self, IntLevel};
use super::sgemm::{
    bias_only, check_operands, epilogue_on_tile, run_jobs, split_jobs, Epilogue, Init, PackedGemm,
    PackedWeight, SendPtr, NR,
};
use super::{unwritten, written};

/// GGUF block formats [`Int8Weight::from_blocks`] lays out (32 values per block, an f16
/// scale `d` first: Q8_0 then 32 signed bytes, Q4_0 then 16 bytes of two 4-bit values each,
/// low nibbles first, offset by 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFormat {
    Q8_0,
    Q4_0,
    /// `d` and a minimum `m` (both f16), then 16 bytes of 4-bit `q` (0-15): the value is
    /// `d * q + m`. Multiplied as Q4_0 (nibbles as `(q - 8) + 8`) plus a correction per block,
    /// `(8 d + m) · d_x Σ q_x`, run as a small f32 product (see [`Int8Weight`]).
    Q4_1,
}

/// Values per GGUF block of the [`BlockFormat`]s.
pub const QK: usize = 32;

impl BlockFormat {
    /// Bytes per block: the f16 scale, then the values.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 2 + QK,
            BlockFormat::Q4_0 => 2 + QK / 2,
            BlockFormat::Q4_1 => 4 + QK / 2,
        }
    }

    /// A block's scale `d` (its first two bytes, f16).
    pub fn scale(self, block: &[u8]) -> f32 {
        half::f16::from_le_bytes([block[0], block[1]]).to_f32()
    }

    /// A Q4_1 block's minimum `m` (0 for the other formats).
    pub fn min(self, block: &[u8]) -> f32 {
        match self {
            BlockFormat::Q4_1 => half::f16::from_le_bytes([block[2], block[3]]).to_f32(),
            _ => 0.0,
        }
    }

    /// The format whose layout and kernels multiply this one's values (Q4_1's nibbles are
    /// laid out and multiplied as Q4_0's).
    fn kernel_format(self) -> BlockFormat {
        match self {
            BlockFormat::Q4_1 => BlockFormat::Q4_0,
            f => f,
        }
    }

    /// A block's scale `d` and its 32 integer values `q` (the value is `d * q`; for Q4_1,
    /// `q` is the nibble minus 8 and the value `d * (q + 8) + m`).
    pub fn decode(self, block: &[u8]) -> (f32, [i8; QK]) {
        let d = self.scale(block);
        let mut qs = [0i8; QK];
        match self {
            BlockFormat::Q8_0 => {
                for (v, &q) in qs.iter_mut().zip(&block[2..2 + QK]) {
                    *v = q as i8;
                }
            }
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                let start = self.block_bytes() - QK / 2;
                let (lo, hi) = qs.split_at_mut(QK / 2);
                for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&block[start..start + QK / 2]) {
                    *l = (q & 0x0f) as i8 - 8;
                    *h = (q >> 4) as i8 - 8;
                }
            }
        }
        (d, qs)
    }
}

/// Input rows per microkernel call.
pub const MR: usize = 6;
/// Blocks of `k` per pass: 1024 values, so a panel's share (16 KiB of weights, 2 KiB of
/// scales) stays in L1 while a row block's (`MC` x 1024 x 2 bytes) stays in L2.
const PASS_BLOCKS: usize = 32;
/// Rows per row block.
const MC: usize = 96;
/// From this many input rows on, the [`quads`] kernels fetch the next tile's output rows
/// while they compute; under it, every kernel fetches the weights ahead instead
/// ([`WEIGHT_PREFETCH_BYTES`]). Without the output fetches, one layer (768 -> 3072, Q8_0,
/// VNNI) ran 20-25% slower at 1,024 rows than at 128 (the first store to each output line
/// waited on memory), and with them Q8_0 BERT-base passes at 8 x 128 and 32 x 128 took 8-13%
/// less time; at 128 rows (1 x 128) they cost 2% (alternating rounds, Zen 5, session 21).
const PREFETCH_OUTPUTS_FROM_ROWS: usize = 256;
/// How many blocks ahead the kernel prefetches the input rows.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PREFETCH_BLOCKS: usize = 2;
/// How far ahead of the block it multiplies a kernel fetches the weight panel (and its scales,
/// proportionally), in products of fewer than [`PREFETCH_OUTPUTS_FROM_ROWS`] rows. A whole
/// model's weights do not stay in cache from one pass to the next, and with few rows each
/// weight line serves few products, so the kernel waits on memory unless the line is on its
/// way. Q8_0 BERT-base passes at 1 x 16 / 1 x 32 / 1 x 128 took 0.59 / 0.72 / 0.91 of the time
/// at AVX-512 VNNI, 1 x 16 / 1 x 128 0.72 / 0.95 at AVX2 (Zen 5, session 22); from 1,024 rows
/// on (32 x 32, 32 x 128) the same prefetches cost 3-5%, hence the threshold. 1, 2, 4, 8 and
/// 16 KiB ahead were compared: 4 KiB or more did best, with no clear winner past it. Where the
/// whole model stays in the last-level cache (MiniLM in Q8_0, 22 MB) there is nothing to gain
/// (1 x 16 1.03 [1.00-1.04] of the time).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const WEIGHT_PREFETCH_BYTES: usize = 4096;
/// Values of one panel for one block: 16 steps x 16 columns x 2 values.
const PANEL_BLOCK: usize = QK * NR;

impl BlockFormat {
    /// Bytes one panel holds for one block: a byte per value for Q8_0; for Q4_0 a nibble,
    /// so that a Q4_0 layer takes in memory what its file does (plus f32 scales).
    fn panel_block_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => PANEL_BLOCK,
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => PANEL_BLOCK / 2,
        }
    }
}

/// A Q8_0, Q4_0 or Q4_1 weight `(n, k)` laid out for [`Int8Weight::matmul_then`].
pub struct Int8Weight {
    n: usize,
    k: usize,
    format: BlockFormat,
    /// The kernels that multiply it.
    level: IntLevel,
    /// Whether the values are laid out 4 `k` a column for the [`quads`] kernels (VNNI levels,
    /// and Q4_0 / Q4_1 at every level), rather than 2 `k` a column for the AVX2 i16 kernel.
    quads: bool,
    /// Panel values, from `offset` on (64-byte aligned).
    quants: Vec<i8>,
    offset: usize,
    /// `d` per panel, block and column (zero past `n`).
    scales: Vec<f32>,
    /// Q4_1: `8 d + m` per output and block, `(n, k / 32)`, packed for the f32 GEMM. The
    /// Q4_0 kernel gives `Σ_b d d_x Σ (q - 8) q_x`; adding `Σ_b (8 d + m) · d_x Σ q_x` makes
    /// it `Σ_b (d d_x Σ q q_x + m d_x Σ q_x)`, Q4_1's product. ggml's own Q4_1 product
    /// (with Q8_1 inputs) rounds `d_x Σ q_x` to f16 first; this keeps it in f32, so results
    /// agree with candle's to that rounding, not bit for bit (tested).
    min_offsets: Option<PackedWeight>,
}

/// Input rows rounded to Q8_0 blocks: the values (as i16 for the AVX2 i16 kernel, as signed
/// bytes for the [`quads`] kernels), one scale per block and, for the [`quads`] kernels, each
/// block's sum of values.
struct QuantizedRows {
    q: Vec<i16>,
    bytes: Vec<u8>,
    d: Vec<f32>,
    /// `Σ q_x` per block ([`quads`] kernels; Q4_1's correction reads it).
    sums: Vec<i32>,
    /// `-o · Σ q_x` per block, `o` the weight layout's offset ([`quads::weight_offset`]): the
    /// value each block's integer sum starts from in the [`quads`] kernels, kept ready so that
    /// a kernel broadcasts it straight from memory instead of a shift, a negation and a move
    /// from a general register per row and block (one VNNI layer at 128 rows: 3-8% more
    /// GOP/s; Q8_0 BERT-base passes under 1,024 rows 1-4% shorter, unchanged from there; Zen 5).
    corrections: Vec<i32>,
}

impl Int8Weight {
    /// Lay out GGUF blocks of a weight `(n, k)` (row `j`'s blocks in order, as a QTensor
    /// holds them), panels in parallel, for the best kernel level of this host. `None` when
    /// this CPU lacks AVX2/FMA, `k` is not a whole number of blocks or `bytes` is not `n`
    /// rows of blocks.
    pub fn from_blocks(format: BlockFormat, bytes: &[u8], n: usize, k: usize) -> Option<Self> {
        Self::from_blocks_for(format, bytes, n, k, isa::int_level()?)
    }

    /// [`Self::from_blocks`] for the kernels of `level` (tests compare the levels on one
    /// host); `None` also when this CPU lacks `level`.
    pub fn from_blocks_for(
        format: BlockFormat,
        bytes: &[u8],
        n: usize,
        k: usize,
        level: IntLevel,
    ) -> Option<Self> {
        let block_bytes = format.block_bytes();
        if !PackedWeight::supported()
            || !level.available()
            || !k.is_multiple_of(QK)
            || bytes.len() != n * (k / QK) * block_bytes
        {
            return None;
        }
        let blocks = k / QK;
        let panels = n.div_ceil(NR);
        let panel_block = format.panel_block_bytes();
        let mut quants = vec![0i8; panels * blocks * panel_block + 64];
        let offset = quants.as_ptr().align_offset(64).min(64);
        let mut scales = vec![0f32; panels * blocks * NR];
        let kernel_format = format.kernel_format();
        let quads = level != IntLevel::Avx2 || kernel_format == BlockFormat::Q4_0;
        let mut offsets = if format == BlockFormat::Q4_1 {
            vec![0f32; n * blocks]
        } else {
            Vec::new()
        };
        for (j, row_offsets) in offsets.chunks_exact_mut(blocks.max(1)).enumerate() {
            let row = &bytes[j * blocks * block_bytes..];
            for (b, o) in row_offsets.iter_mut().enumerate() {
                let block = &row[b * block_bytes..];
                *o = 8.0 * format.scale(block) + format.min(block);
            }
        }
        use rayon::prelude::*;
        quants[offset..offset + panels * blocks * panel_block]
            .par_chunks_mut((blocks * panel_block).max(1))
            .zip(scales.par_chunks_mut((blocks * NR).max(1)))
            .enumerate()
            .for_each(|(p, (panel, panel_scales))| {
                for col in 0..NR.min(n - p * NR) {
                    let (half, c) = (col / 8, col % 8);
                    let row = &bytes[(p * NR + col) * blocks * block_bytes..];
                    for b in 0..blocks {
                        let (d, qs) = format.decode(&row[b * block_bytes..]);
                        panel_scales[b * NR + col] = d;
                        let dst = &mut panel[b * panel_block..(b + 1) * panel_block];
                        if quads {
                            quads::lay_out_block(kernel_format, &qs, col, dst);
                            continue;
                        }
                        // Q8_0 for the i16 kernel.
                        for (step, two) in qs.chunks_exact(2).enumerate() {
                            let at = step * 32 + half * 16 + c * 2;
                            dst[at..at + 2].copy_from_slice(two);
                        }
                    }
                }
            });
        Some(Int8Weight {
            n,
            k,
            format,
            level,
            quads,
            quants,
            offset,
            scales,
            min_offsets: (format == BlockFormat::Q4_1)
                .then(|| PackedWeight::pack(&offsets, n, blocks)),
        })
    }

    /// The block format the weight came in.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// The kernel level that multiplies this weight.
    pub fn level(&self) -> IntLevel {
        self.level
    }

    /// Input rows per microkernel call for this weight's level and layout.
    fn tile_rows(&self) -> usize {
        match (self.level, self.quads) {
            (IntLevel::Avx512Vnni, _) => quads::MR_512,
            (IntLevel::Avx2, true) => quads::MR_AVX2,
            (IntLevel::AvxVnni, _) if self.format != BlockFormat::Q8_0 => quads::MR_256_Q4,
            (IntLevel::AvxVnni | IntLevel::Avx2, _) => MR,
        }
    }

    /// Bytes the weight takes without the panels' padding to 16 columns: a byte (Q8_0) or a
    /// nibble (Q4_0) per value and an f32 scale per 32 values.
    pub fn weight_bytes(&self) -> usize {
        let values = self.n * self.k;
        let per_block = if self.format == BlockFormat::Q4_1 {
            8
        } else {
            4
        };
        match self.format {
            BlockFormat::Q8_0 => values,
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => values / 2,
        }
        .saturating_add(self.n * (self.k / QK) * per_block)
    }

    /// Bytes held (values, f32 scales and, for Q4_1, the packed offsets; padding included).
    pub fn bytes(&self) -> usize {
        self.quants.len()
            + self.scales.len() * 4
            + self.min_offsets.as_ref().map_or(0, PackedWeight::bytes)
    }

    /// One thread's share: rows `rows` of the output, column panels `cols`.
    unsafe fn passes(
        &self,
        x: &QuantizedRows,
        bias: Option<&[f32]>,
        epilogue: Option<Epilogue>,
        out: SendPtr,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) {
        let (n, k) = (self.n, self.k);
        let blocks = k / QK;
        let prefetch_outputs = x.d.len() / blocks >= PREFETCH_OUTPUTS_FROM_ROWS;
        let quants = &self.quants[self.offset..];
        let format = self.format.kernel_format();
        let panel_block = format.panel_block_bytes();
        let mr = self.tile_rows();
        let mut m0 = rows.start;
        while m0 < rows.end {
            let mc = MC.min(rows.end - m0);
            let mut b0 = 0;
            while b0 < blocks {
                let nb = PASS_BLOCKS.min(blocks - b0);
                // The kernels apply GELU to their registers; any other epilogue runs on the
                // stored tile.
                let (in_kernel, on_tile) = Epilogue::for_pass(epilogue, b0 + nb == blocks);
                for p in cols.clone() {
                    let width = NR.min(n - p * NR);
                    let mut panel_bias = [0f32; NR];
                    let init = Init::for_pass(b0 == 0, bias, p * NR, width, &mut panel_bias);
                    for t in (0..mc).step_by(mr) {
                        let r = mr.min(mc - t);
                        let row = m0 + t;
                        let c = out.0.add(row * n + p * NR);
                        // The next tile's output rows, fetched while this one computes (as
                        // the f32 GEMM does): a large product's output is far from cache.
                        let next = if prefetch_outputs && t + mr < mc {
                            (c.add(r * n), mr.min(mc - t - mr))
                        } else {
                            (std::ptr::null_mut(), 0)
                        };
                        let tile = QTile {
                            gelu: in_kernel,
                            next,
                            blocks: nb,
                            q: x.q
                                .get(row * k + b0 * QK..)
                                .map_or(std::ptr::null(), <[_]>::as_ptr),
                            bytes: x
                                .bytes
                                .get(row * k + b0 * QK..)
                                .map_or(std::ptr::null(), <[_]>::as_ptr),
                            lda: k,
                            d: x.d[row * blocks + b0..].as_ptr(),
                            ldd: blocks,
                            w: quants[(p * blocks + b0) * panel_block..].as_ptr(),
                            corrections: if x.corrections.is_empty() {
                                std::ptr::null()
                            } else {
                                x.corrections[row * blocks + b0..].as_ptr()
                            },
                            ws: self.scales[(p * blocks + b0) * NR..].as_ptr(),
                            c,
                            ldc: n,
                            width,
                            init,
                            bias: &panel_bias,
                        };
                        // Weights fetched ahead only under PREFETCH_OUTPUTS_FROM_ROWS rows;
                        // a type parameter, not a flag, so that the kernels without it
                        // compile exactly as before (a run-time flag cost larger products
                        // 5-8% in register spills).
                        match (self.quads, prefetch_outputs) {
                            (true, false) => quads::tile::<true>(self.level, format, r, &tile),
                            (true, true) => quads::tile::<false>(self.level, format, r, &tile),
                            (false, false) => i16_tile::<true>(r, &tile),
                            (false, true) => i16_tile::<false>(r, &tile),
                        }
                        if let Some(f) = on_tile {
                            epilogue_on_tile(f, c, n, r, width);
                        }
                    }
                }
                b0 += nb;
            }
            m0 += mc;
        }
    }
}

impl PackedGemm for Int8Weight {
    /// Output features.
    fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    fn k(&self) -> usize {
        self.k
    }

    /// `out (m, n) = round_q8_0(x) (m, k) Wᵀ + bias` into an output that is written before it
    /// is read (the first block pass of every tile stores without loading, as the f32 GEMM's
    /// first pass does, so it needs no zero-fill), split over up to `threads` threads, then
    /// `epilogue` on every output once (a tile's gathered into one stretch).
    ///
    /// Panics when the slices do not have the stated sizes.
    fn matmul_then_uninit(
        &self,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        out: &mut [std::mem::MaybeUninit<f32>],
        threads: usize,
        epilogue: Option<Epilogue>,
    ) {
        let (n, k) = (self.n, self.k);
        check_operands(n, k, x, m, bias, out.len());
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            // No block pass runs: the product is the bias.
            return bias_only(out, n, bias, epilogue);
        }
        let rows = quantize_rows(
            x,
            self.quads
                .then(|| quads::weight_offset(self.format.kernel_format())),
        );
        let out_ptr = SendPtr(out.as_mut_ptr().cast::<f32>());
        let jobs = split_jobs(m, n.div_ceil(NR), m * n * k, threads, self.tile_rows(), 1);
        // Q4_1's activation runs after its correction below.
        let main_epilogue = if self.min_offsets.is_some() {
            None
        } else {
            epilogue
        };
        run_jobs(jobs, |(rows_range, cols)| {
            // SAFETY: jobs cover disjoint rows or disjoint column panels of `out`, and the first
            // block pass of each tile writes it before any pass reads it; the CPU features were
            // checked when the weight was laid out.
            unsafe { self.passes(&rows, bias, main_epilogue, out_ptr, rows_range, cols) }
        });
        if let Some(offsets) = &self.min_offsets {
            // SAFETY: the block passes have written every value.
            let out = unsafe { std::slice::from_raw_parts_mut(out_ptr.0, out.len()) };
            // `d_x Σ q_x` per row and block, times `8 d + m` per output and block.
            let scaled: Vec<f32> = rows
                .d
                .iter()
                .zip(&rows.sums)
                .map(|(&d, &s)| d * s as f32)
                .collect();
            let mut correction = unwritten::<f32>(m * n);
            offsets.matmul_then_uninit(&scaled, m, None, &mut correction, threads, None);
            // SAFETY: the product wrote every value.
            let correction = unsafe { written(correction) };
            // The sums and the activation over the pool, in stretches of rows: on one thread
            // this pass left the other idle (3.4% of a SmolLM2 Q4_1 pass's samples). Adding
            // the correction to each tile inside the block passes instead measured no faster
            // (the correction's lines, one per row and panel, arrive late even when fetched).
            let rows_per_job = m.div_ceil(threads.max(1));
            super::pool::for_each_chunk_mut(out, rows_per_job * n, |i, part| {
                let corr = &correction[i * rows_per_job * n..][..part.len()];
                for (row, corr) in part.chunks_exact_mut(n).zip(corr.chunks_exact(n)) {
                    for (o, &c) in row.iter_mut().zip(corr) {
                        *o += c;
                    }
                    if let Some(f) = epilogue {
                        f.apply(row);
                    }
                }
            });
        }
    }
}

/// Where [`round_to_q8_0_into`] puts each block's 32 rounded values.
enum Rounded<'a> {
    /// As i16: the AVX2 i16 kernel's input, and [`round_to_q8_0`]'s.
    Values(&'a mut [MaybeUninit<i16>]),
    /// As signed bytes, with each block's sum: the [`quads`] kernels' input.
    Bytes {
        bytes: &'a mut [MaybeUninit<u8>],
        sums: &'a mut [i32],
    },
}

#[cfg(target_arch = "x86_64")]
impl Rounded<'_> {
    /// The blocks from `from` on.
    fn tail(&mut self, from: usize) -> Rounded<'_> {
        match self {
            Rounded::Values(q) => Rounded::Values(&mut q[from * QK..]),
            Rounded::Bytes { bytes, sums } => Rounded::Bytes {
                bytes: &mut bytes[from * QK..],
                sums: &mut sums[from..],
            },
        }
    }
}

/// Round input rows (their width a multiple of [`QK`], as the weight's `k` is) to Q8_0 blocks
/// exactly as candle's `BlockQ8_0::from_float` does, spread over the kernels' pool. For the
/// [`quads`] kernels (`quads_offset`: the weight layout's offset `o`) the values are given as
/// bytes, with each block's sum and `-o` times it.
fn quantize_rows(x: &[f32], quads_offset: Option<i32>) -> QuantizedRows {
    let for_quads = quads_offset.is_some();
    let blocks = x.len() / QK;
    let kept = |on: bool| if on { x.len() } else { 0 };
    let mut q = unwritten::<i16>(kept(!for_quads));
    let mut bytes = unwritten::<u8>(kept(for_quads));
    let mut d = vec![0.0; blocks];
    let mut sums = vec![0; if for_quads { blocks } else { 0 }];
    let mut corrections = vec![0; if for_quads { blocks } else { 0 }];
    let offset = quads_offset.unwrap_or(0);
    // Chunks of 64 blocks: the corrections are taken from the sums while they are in L1.
    const CHUNK: usize = 64;
    let outputs: Vec<Rounded> = if for_quads {
        bytes
            .chunks_mut(CHUNK * QK)
            .zip(sums.chunks_mut(CHUNK))
            .map(|(bytes, sums)| Rounded::Bytes { bytes, sums })
            .collect()
    } else {
        q.chunks_mut(CHUNK * QK).map(Rounded::Values).collect()
    };
    // The corrections' chunks are empty slices when they are not kept.
    let corrections_chunks = corrections
        .chunks_mut(CHUNK)
        .map(Some)
        .chain(std::iter::repeat_with(|| None))
        .map(Option::unwrap_or_default);
    let chunk = |(((x, d), mut out), corrections): (_, &mut [i32])| {
        round_to_q8_0_into(x, d, &mut out);
        if let Rounded::Bytes { sums, .. } = out {
            for (correction, &sum) in corrections.iter_mut().zip(sums.iter()) {
                *correction = -offset * sum;
            }
        }
    };
    let chunks = x
        .chunks(CHUNK * QK)
        .zip(d.chunks_mut(CHUNK))
        .zip(outputs)
        .zip(corrections_chunks);
    if blocks <= CHUNK {
        // Small inputs (a batch-1 token, a short sentence) stay on the calling thread: handing
        // one chunk to the pool and waiting costs more than rounding it.
        chunks.for_each(chunk);
    } else {
        super::pool::for_each_item(chunks.collect(), chunk);
    }
    // SAFETY: the chunks cover the input, and each chunk wrote all of its values or bytes (the
    // vector not kept is empty).
    let (q, bytes) = unsafe { (written(q), written(bytes)) };
    QuantizedRows {
        q,
        bytes,
        d,
        sums,
        corrections,
    }
}

/// Round each 32-value block of `x` to Q8_0 exactly as candle's `BlockQ8_0::from_float`
/// does (`d = amax / 127` kept as f16, `q = round(x / d)`): values into `q`, scales into `d`.
pub(crate) fn round_to_q8_0(x: &[f32], q: &mut [i16], d: &mut [f32]) {
    // SAFETY: an `i16` is a valid `MaybeUninit<i16>`, and only `i16`s are written.
    let q = unsafe { &mut *(q as *mut [i16] as *mut [MaybeUninit<i16>]) };
    round_to_q8_0_into(x, d, &mut Rounded::Values(q));
}

/// [`round_to_q8_0`] into `out`, which afterwards holds every block's values written.
fn round_to_q8_0_into(x: &[f32], d: &mut [f32], out: &mut Rounded) {
    let sizes_match = match out {
        Rounded::Values(q) => q.len() == x.len(),
        Rounded::Bytes { bytes, sums } => bytes.len() == x.len() && sums.len() == d.len(),
    };
    assert!(
        sizes_match && x.len() == d.len() * QK,
        "one scale per 32 values"
    );
    if PackedWeight::supported() {
        // SAFETY: the CPU has AVX2 (`supported` is false off x86-64), and AVX-512F where the
        // f32 level says so; the sizes were checked.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if isa::f32_level() == Some(isa::F32Level::Avx512) {
                round_blocks_avx512(x, d, out)
            } else {
                round_blocks_avx2(x, d, out)
            }
        };
    } else {
        round_blocks(x, d, out);
    }
}

/// [`round_to_q8_0`], generic code.
#[inline(always)]
fn round_blocks(x: &[f32], d: &mut [f32], out: &mut Rounded) {
    for (b, (x, d)) in x.chunks_exact(QK).zip(d.iter_mut()).enumerate() {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        *d = half::f16::from_f32(scale).to_f32();
        let rounded = x.iter().map(|&v| f32::round(v * inv) as i8);
        match out {
            Rounded::Values(q) => {
                for (q, v) in q[b * QK..][..QK].iter_mut().zip(rounded) {
                    q.write(v.into());
                }
            }
            Rounded::Bytes { bytes, sums } => {
                sums[b] = 0;
                for (byte, v) in bytes[b * QK..][..QK].iter_mut().zip(rounded) {
                    byte.write(v as u8);
                    sums[b] += i32::from(v);
                }
            }
        }
    }
}

/// The largest f32 below one half. Rust's `round` (halves away from zero) of any f32 `p` is
/// `trunc(p + copysign(BELOW_HALF, p))`: adding a whole half would carry values just below a
/// half (0.49999997) over to the next integer; the float below it makes the sum of an exact
/// half round up to the integer (checked for all 2³² floats, with the clamp to i8's range the
/// vector loops apply, when the loops took it up). Three operations where truncating, taking
/// the difference and comparing it with a half took six.
#[cfg(target_arch = "x86_64")]
const BELOW_HALF: f32 = f32::from_bits(0.5f32.to_bits() - 1);

/// [`round_blocks`] in AVX2, with the same results: the absolute maximum by lanes (`max`
/// is exact and ignores NaN in either order, as `f32::max` does), `round` as a truncation
/// after adding [`BELOW_HALF`] with the value's sign, and `as i8`'s saturation (NaN to 0)
/// before narrowing. The scalar loop it replaces was compiled with a scalar maximum and ~7%
/// of a Q8_0 BERT-base pass.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn round_blocks_avx2(x: &[f32], d: &mut [f32], out: &mut Rounded) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let below_half = _mm256_set1_ps(BELOW_HALF);
    let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
    for (b, (x, d)) in x.chunks_exact(QK).zip(d.iter_mut()).enumerate() {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
        // `max_ps(a, m)` returns `m` when `a` is NaN.
        let mut m = _mm256_setzero_ps();
        for &v in &v {
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v), m);
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
        let scale = amax / 127.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        *d = half::f16::from_f32(scale).to_f32();
        let inv = _mm256_set1_ps(inv);
        let ints: [__m256i; 4] = std::array::from_fn(|i| {
            let p = _mm256_mul_ps(v[i], inv);
            let t = _mm256_add_ps(p, _mm256_or_ps(_mm256_and_ps(sign, p), below_half));
            // `as i8`: saturate (`max_ps` gives `lo` for NaN), then NaN to 0.
            let r = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
            _mm256_cvttps_epi32(_mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(p, p)))
        });
        match out {
            Rounded::Values(q) => {
                // `packs` interleaves 128-bit lanes; the permute puts the values back in order.
                let fix =
                    |a, b| _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
                let dst = q.as_mut_ptr().add(b * QK) as *mut __m256i;
                _mm256_storeu_si256(dst, fix(ints[0], ints[1]));
                _mm256_storeu_si256(dst.add(1), fix(ints[2], ints[3]));
            }
            Rounded::Bytes { bytes, sums } => {
                // Dwords of four values come out of the two packs in the order 0 2 4 6 1 3 5
                // 7 of the block's eight.
                let words = |a, b| _mm256_packs_epi32(a, b);
                let packed = _mm256_packs_epi16(words(ints[0], ints[1]), words(ints[2], ints[3]));
                let ordered =
                    _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                _mm256_storeu_si256(bytes.as_mut_ptr().add(b * QK) as *mut __m256i, ordered);
                let s = _mm256_add_epi32(
                    _mm256_add_epi32(ints[0], ints[1]),
                    _mm256_add_epi32(ints[2], ints[3]),
                );
                let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
                let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
                sums[b] = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32::<1>(s2)));
            }
        }
    }
}

/// [`round_blocks`] in AVX-512, sixteen blocks at a time, with the same results: each
/// block's absolute maximum in a register, the sixteen maxima folded into one register
/// (pairs of registers interleaved and folded, as a transpose would, 45 operations for the
/// sixteen), the scales and their inverses as two vector divisions and the f16 rounding of
/// the scales as one conversion each way (what `half` does per value with F16C), then the
/// values as in [`round_blocks_avx2`], sixteen lanes at a time (NaN to 0 by the conversion's
/// mask), narrowed on the way out; the block sums folded as the maxima are. Blocks past the
/// last multiple of sixteen take the AVX2 loop.
///
/// # Safety
/// The CPU must have AVX-512F (and so AVX2 and F16C); `out` holds `d.len()` blocks, `x`
/// as many values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,f16c")]
unsafe fn round_blocks_avx512(x: &[f32], d: &mut [f32], out: &mut Rounded) {
    use std::arch::x86_64::*;
    const GROUP: usize = 16;
    let groups = d.len() / GROUP;
    let abs = |v: __m512| {
        _mm512_castsi512_ps(_mm512_and_si512(
            _mm512_castps_si512(v),
            _mm512_set1_epi32(i32::MAX),
        ))
    };
    let one = _mm512_set1_ps(1.0);
    let (lo, hi) = (_mm512_set1_ps(-128.0), _mm512_set1_ps(127.0));
    let sign = _mm512_set1_epi32(i32::MIN);
    let below_half = _mm512_castps_si512(_mm512_set1_ps(BELOW_HALF));
    for g in 0..groups {
        let xg = x.as_ptr().add(g * GROUP * QK);
        // Per block, lane-wise maxima of |x| over its two registers (`max_ps(a, m)` returns
        // `m` when `a` is NaN, so NaN is ignored, as in the other loops).
        let m: [__m512; GROUP] = std::array::from_fn(|b| {
            let p = xg.add(b * QK);
            let m = _mm512_max_ps(abs(_mm512_loadu_ps(p)), _mm512_setzero_ps());
            _mm512_max_ps(abs(_mm512_loadu_ps(p.add(16))), m)
        });
        let amax = fold16(&m, |a, b| _mm512_max_ps(a, b));
        let scale = _mm512_div_ps(amax, _mm512_set1_ps(127.0));
        let nonzero = _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(scale, _mm512_setzero_ps());
        let inv = _mm512_maskz_div_ps(nonzero, one, scale);
        let halfs = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(scale);
        _mm512_storeu_ps(d.as_mut_ptr().add(g * GROUP), _mm512_cvtph_ps(halfs));
        let mut invs = [0f32; GROUP];
        _mm512_storeu_ps(invs.as_mut_ptr(), inv);
        let mut block_sums = [_mm512_setzero_ps(); GROUP];
        for (b, &inv) in invs.iter().enumerate() {
            let inv = _mm512_set1_ps(inv);
            let ints: [__m512i; 2] = std::array::from_fn(|h| {
                let p = _mm512_mul_ps(_mm512_loadu_ps(xg.add(b * QK + 16 * h)), inv);
                // `(p & sign) | BELOW_HALF` in one ternary-logic operation.
                let step =
                    _mm512_ternarylogic_epi32::<0xEA>(_mm512_castps_si512(p), sign, below_half);
                let t = _mm512_add_ps(p, _mm512_castsi512_ps(step));
                // `as i8`: saturate, and NaN to 0 through the conversion's mask.
                let r = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
                _mm512_maskz_cvttps_epi32(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(p, p), r)
            });
            let at = (g * GROUP + b) * QK;
            match out {
                Rounded::Values(q) => {
                    let dst = q.as_mut_ptr().add(at) as *mut __m256i;
                    _mm256_storeu_si256(dst, _mm512_cvtepi32_epi16(ints[0]));
                    _mm256_storeu_si256(dst.add(1), _mm512_cvtepi32_epi16(ints[1]));
                }
                Rounded::Bytes { bytes, .. } => {
                    let dst = bytes.as_mut_ptr().add(at) as *mut __m128i;
                    _mm_storeu_si128(dst, _mm512_cvtepi32_epi8(ints[0]));
                    _mm_storeu_si128(dst.add(1), _mm512_cvtepi32_epi8(ints[1]));
                    block_sums[b] = _mm512_castsi512_ps(_mm512_add_epi32(ints[0], ints[1]));
                }
            }
        }
        if let Rounded::Bytes { sums, .. } = out {
            let add = |a: __m512, b: __m512| {
                _mm512_castsi512_ps(_mm512_add_epi32(
                    _mm512_castps_si512(a),
                    _mm512_castps_si512(b),
                ))
            };
            let folded = _mm512_castps_si512(fold16(&block_sums, add));
            _mm512_storeu_si512(sums.as_mut_ptr().add(g * GROUP) as *mut _, folded);
        }
    }
    let done = groups * GROUP;
    round_blocks_avx2(&x[done * QK..], &mut d[done..], &mut out.tail(done));
}

/// Sixteen registers folded to one by `op`, lane `b` from register `b`'s sixteen lanes
/// (pairs of registers interleaved and folded, as a transpose would, 45 operations): within
/// 128-bit lanes first (four registers to one), then across them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn fold16(
    m: &[std::arch::x86_64::__m512; 16],
    op: impl Fn(std::arch::x86_64::__m512, std::arch::x86_64::__m512) -> std::arch::x86_64::__m512,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let fold4 = |m: &[__m512]| {
        let a = op(
            _mm512_unpacklo_ps(m[0], m[1]),
            _mm512_unpackhi_ps(m[0], m[1]),
        );
        let b = op(
            _mm512_unpacklo_ps(m[2], m[3]),
            _mm512_unpackhi_ps(m[2], m[3]),
        );
        let (a, b) = (_mm512_castps_pd(a), _mm512_castps_pd(b));
        op(
            _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
        )
    };
    let r: [__m512; 4] = std::array::from_fn(|i| fold4(&m[4 * i..4 * i + 4]));
    let across = |a: __m512, b: __m512| {
        op(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        )
    };
    across(across(r[0], r[1]), across(r[2], r[3]))
}

/// One microkernel call: `c (R x width) (+)= x (R x nb·32) wᵀ` over `blocks` blocks.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct QTile<'a> {
    /// Whether the kernel applies GELU to the finished outputs before storing them (the
    /// last block pass; see [`super::ops::gelu_on_ymm_tile`]).
    gelu: bool,
    blocks: usize,
    /// Row 0's values at the pass's first block; rows `lda` apart (AVX2 i16 kernel; else
    /// null).
    q: *const i16,
    /// The same as bytes ([`quads`] kernels; else null).
    bytes: *const u8,
    lda: usize,
    /// Row 0's block scales at the pass's first block; rows `ldd` apart.
    d: *const f32,
    ldd: usize,
    /// Row 0's corrections per block ([`QuantizedRows::corrections`]; [`quads`] kernels, else
    /// null) at the pass's first block; rows `ldd` apart.
    corrections: *const i32,
    /// The panel's values and scales at the pass's first block.
    w: *const i8,
    ws: *const f32,
    c: *mut f32,
    ldc: usize,
    width: usize,
    init: Init,
    bias: &'a [f32; NR],
    /// Output rows of the next tile (start, count) to prefetch.
    next: (*mut f32, usize),
}

/// Run the i16 kernel for a tile of `r` rows (1..=[`MR`]), fetching weights ahead if `FETCH`.
///
/// # Safety
/// The CPU has AVX2 and FMA; the tile's pointers cover what it states.
unsafe fn i16_tile<const FETCH: bool>(r: usize, t: &QTile) {
    match r {
        6 => kernel::<6, FETCH>(t),
        5 => kernel::<5, FETCH>(t),
        4 => kernel::<4, FETCH>(t),
        3 => kernel::<3, FETCH>(t),
        2 => kernel::<2, FETCH>(t),
        _ => kernel::<1, FETCH>(t),
    }
}

/// The AVX2 kernel for Q8_0 weights in the i16 layout: `R` rows (at most [`MR`]) by one panel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize, const FETCH: bool>(t: &QTile) {
    use super::sgemm::load_output_row;
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    match t.init {
        Init::Zero => {}
        Init::Bias => {
            let b = load_output_row(t.bias.as_ptr(), NR);
            acc.iter_mut().for_each(|row| *row = b);
        }
        Init::Accumulate => {
            for (i, row) in acc.iter_mut().enumerate() {
                *row = load_output_row(t.c.add(i * t.ldc), t.width);
            }
        }
    }
    let (mut w, mut ws) = (t.w, t.ws);
    for b in 0..t.blocks {
        // One block of a row is one 64-byte line of i16 values: fetch each row's line
        // PREFETCH_BLOCKS ahead, since a row block's values live in L2.
        for i in 0..R {
            _mm_prefetch::<_MM_HINT_T0>(
                t.q.wrapping_add(i * t.lda + (b + PREFETCH_BLOCKS) * QK) as *const i8
            );
        }
        if FETCH {
            prefetch_weights(w, PANEL_BLOCK, ws);
        }
        let mut sums = [[_mm256_setzero_si256(); 2]; R];
        for step in 0..QK / 2 {
            let w0 = _mm256_cvtepi8_epi16(_mm_load_si128(w.add(step * 32) as *const __m128i));
            let w1 = _mm256_cvtepi8_epi16(_mm_load_si128(w.add(step * 32 + 16) as *const __m128i));
            let at = b * QK + step * 2;
            for (i, sum) in sums.iter_mut().enumerate() {
                let q = _mm256_set1_epi32(std::ptr::read_unaligned(
                    t.q.add(i * t.lda + at) as *const i32
                ));
                sum[0] = _mm256_add_epi32(sum[0], _mm256_madd_epi16(w0, q));
                sum[1] = _mm256_add_epi32(sum[1], _mm256_madd_epi16(w1, q));
            }
        }
        scale_block(&mut acc, &sums, t, ws, b);
        w = w.add(PANEL_BLOCK);
        ws = ws.add(NR);
    }
    finish_tile(t, &mut acc);
}

/// Fetch the weight block [`WEIGHT_PREFETCH_BYTES`] ahead of `w` (`block_bytes` long) and the
/// scales as far ahead in blocks, into L1. Prefetches never fault; the addresses are formed
/// with wrapping arithmetic and may run past the panel.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_weights(w: *const i8, block_bytes: usize, ws: *const f32) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let ahead = w.wrapping_add(WEIGHT_PREFETCH_BYTES);
    for line in 0..block_bytes / 64 {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line * 64));
    }
    let scales = ws.wrapping_add(WEIGHT_PREFETCH_BYTES / block_bytes * NR);
    _mm_prefetch::<_MM_HINT_T0>(scales as *const i8);
}

/// Add one block's exact i32 sums into a ymm kernel's f32 accumulators, `acc += f32(sum) ·
/// (d_x · d_w)` per row and column (`ws`: the panel's 16 weight scales for block `b`), in the
/// order every level keeps, so that all give the same bits. Inlined into each kernel, so
/// compiled for its features.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn scale_block<const R: usize>(
    acc: &mut [[std::arch::x86_64::__m256; 2]; R],
    sums: &[[std::arch::x86_64::__m256i; 2]; R],
    t: &QTile,
    ws: *const f32,
    b: usize,
) {
    use std::arch::x86_64::*;
    let d0 = _mm256_loadu_ps(ws);
    let d1 = _mm256_loadu_ps(ws.add(8));
    for (i, (row, sum)) in acc.iter_mut().zip(sums).enumerate() {
        let dx = _mm256_set1_ps(*t.d.add(i * t.ldd + b));
        row[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[0]), _mm256_mul_ps(dx, d0), row[0]);
        row[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[1]), _mm256_mul_ps(dx, d1), row[1]);
    }
}

/// Store a ymm kernel's finished tile, with GELU on the registers first when the pass asks.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn finish_tile<const R: usize>(t: &QTile, acc: &mut [[std::arch::x86_64::__m256; 2]; R]) {
    use super::sgemm::store_output_row;
    if t.gelu {
        *acc = super::ops::gelu_on_ymm_tile(*acc);
    }
    for (i, row) in acc.iter().enumerate() {
        store_output_row(t.c.add(i * t.ldc), t.width, *row);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel<const R: usize, const FETCH: bool>(_: &QTile) {
    unreachable!("Int8Weight is never built off x86-64")
}

#[cfg(test)]
mod tests {
    use super::super::sgemm::{gelu_reference, test_values as values};
    use super::*;
    use crate::kernels::bits;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    fn format(dtype: GgmlDType) -> BlockFormat {
        match dtype {
            GgmlDType::Q8_0 => BlockFormat::Q8_0,
            GgmlDType::Q4_1 => BlockFormat::Q4_1,
            _ => BlockFormat::Q4_0,
        }
    }

    /// The weight quantized by candle, as blocks and as the values they stand for.
    fn quantized(w: &[f32], n: usize, k: usize, dtype: GgmlDType) -> (QTensor, Vec<f32>) {
        let t = Tensor::from_slice(w, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, dtype).unwrap();
        let values = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        (q, values)
    }

    fn layout(q: &QTensor, dtype: GgmlDType, n: usize, k: usize, level: IntLevel) -> Int8Weight {
        Int8Weight::from_blocks_for(format(dtype), &q.data().unwrap(), n, k, level).unwrap()
    }

    /// Every level this host has (the others say they were skipped).
    fn levels(test: &str) -> Vec<IntLevel> {
        [IntLevel::Avx2, IntLevel::AvxVnni, IntLevel::Avx512Vnni]
            .into_iter()
            .filter(|l| !isa::skip(test, l.name(), l.available()))
            .collect()
    }

    /// `round_q8_0(x) Wᵀ + b` in f64 from candle's own rounding of `x` and dequantized `W`.
    fn reference(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        reference_rounded(x, GgmlDType::Q8_0, w, b, m, n, k)
    }

    /// `round(x) Wᵀ + b` in f64, `x` rounded to `blocks` by candle's quantizer (which is
    /// scalar code, the same on every host).
    fn reference_rounded(
        x: &[f32],
        blocks: GgmlDType,
        w: &[f32],
        b: &[f32],
        m: usize,
        n: usize,
        k: usize,
    ) -> Vec<f64> {
        let xt = Tensor::from_slice(x, (m, k), &Device::Cpu).unwrap();
        let xq = QTensor::quantize(&xt, blocks)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|kk| xq[i * k + kk] as f64 * w[j * k + kk] as f64)
                    .sum();
                out[i * n + j] = dot + b[j] as f64;
            }
        }
        out
    }

    #[test]
    fn matches_the_f64_product_of_the_same_blocks_on_edge_shapes() {
        let levels = levels("matches_the_f64_product_of_the_same_blocks_on_edge_shapes");
        // Rows and columns off the tiles (4, 6 or 8 x 16), one block, depths over one pass
        // (1024).
        for &(m, n, k) in &[
            (1, 1, 32),
            (3, 17, 64),
            (4, 16, 384),
            (9, 45, 1056),
            (101, 20, 96),
            (130, 33, 2080),
            (25, 8, 64),
        ] {
            for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4_1] {
                let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
                let (q, wv) = quantized(&w, n, k, dtype);
                let want = reference(&x, &wv, &b, m, n, k);
                for (&level, threads) in levels.iter().flat_map(|l| [(l, 1), (l, 2), (l, 3)]) {
                    let mut out = vec![f32::NAN; m * n];
                    let weight = layout(&q, dtype, n, k, level);
                    weight.matmul_then(&x, m, Some(&b), &mut out, threads, None);
                    // f32 sums of k / 32 scaled block sums, each exact: 1e-5 * sqrt(k) is ten
                    // times the error seen.
                    let tol = 1e-5 * (k as f64).sqrt();
                    for (e, (&got, &want)) in out.iter().zip(&want).enumerate() {
                        assert!(
                            (got as f64 - want).abs() <= tol,
                            "{level:?} {dtype:?} {m}x{n}x{k} threads={threads}: element {e} \
                             is {got}, want {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn agrees_with_candles_quantized_kernel() {
        let Some(level) = isa::int_level() else {
            eprintln!("skipped: agrees_with_candles_quantized_kernel: this CPU has no AVX2/FMA");
            return;
        };
        // candle's "Q8_0" product rounds the activations to Q8K blocks on hosts with AVX-VNNI
        // or AVX-512 VNNI, for weights of n % 16 == 0 and k % 256 == 0 (its repacked tiles),
        // and to Q8_0 blocks (ggml's arithmetic, which this kernel implements) otherwise. 40
        // outputs keep candle on ggml's dot product on every host, so this compares like with
        // like whatever the CPU; the premise is checked, not assumed. (How candle's tiles
        // round is tested in `candles_q8_0_tiles_round_as_the_dispatch_mirror_says`.)
        // For Q4_1, ggml's own product rounds each input block's `d_x Σ q_x` to f16 (Q8_1
        // blocks), this one does not: they agree to that rounding.
        let (m, n, k) = (5, 40, 768);
        let x = values(m * k, 4);
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4_1] {
            assert!(matches!(
                crate::kernels::dispatch::candle_quantized_kernel(dtype, m, n, k),
                crate::kernels::dispatch::Kernel::CandleGgmlDot { .. }
            ));
            let (q, _) = quantized(&values(n * k, 5), n, k, dtype);
            let mut out = vec![0f32; m * n];
            layout(&q, dtype, n, k, level).matmul_then(&x, m, None, &mut out, 2, None);
            let slack = q4_1_slack(&q, &x, m, n, k);
            let want = candle_product(q, &x, m, k);
            for (e, (&got, &want)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (got - want).abs() <= 1e-4 + slack[e],
                    "{dtype:?}: element {e} is {got}, candle gives {want}"
                );
            }
        }
    }

    /// How far ggml's Q4_1 product may be from the exact one by rounding each input block's
    /// `d_x Σ q_x` to f16 (its Q8_1 blocks): `Σ_b |m_b| · |d_x Σ q_x| · 2^-11` per output;
    /// zeros for the other formats.
    fn q4_1_slack(q: &QTensor, x: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        if q.dtype() != GgmlDType::Q4_1 {
            return vec![0.0; m * n];
        }
        let (blocks, bytes) = (k / QK, q.data().unwrap().to_vec());
        let (mut xq, mut xd) = (vec![0i16; m * k], vec![0f32; m * blocks]);
        round_to_q8_0(x, &mut xq, &mut xd);
        let mut slack = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                slack[i * n + j] = (0..blocks)
                    .map(|b| {
                        let block = &bytes[(j * blocks + b) * 20..];
                        let sum: i32 = xq[(i * blocks + b) * QK..][..QK]
                            .iter()
                            .map(|&v| i32::from(v))
                            .sum();
                        BlockFormat::Q4_1.min(block).abs() * (xd[i * blocks + b] * sum as f32).abs()
                    })
                    .sum::<f32>()
                    / 2048.0;
            }
        }
        slack
    }

    /// candle's `QMatMul` of a quantized weight and f32 rows.
    fn candle_product(q: QTensor, x: &[f32], m: usize, k: usize) -> Vec<f32> {
        let xt = Tensor::from_slice(x, (m, k), &Device::Cpu).unwrap();
        QMatMul::from_qtensor(q)
            .unwrap()
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    #[test]
    fn candles_q8_0_tiles_round_as_the_dispatch_mirror_says() {
        // At a tiled shape candle's Q8_0 result depends on the host: activations in Q8K
        // blocks on VNNI hosts, in Q8_0 blocks elsewhere. Both references are computed here
        // in f64 from candle's own rounding of x, so the test holds on every host: candle
        // must match the reference of the kernel `dispatch` names for this host (what the
        // results files record) and not the other one.
        let (m, n, k) = (5, 48, 768);
        let (x, w) = (values(m * k, 4), values(n * k, 5));
        let (q, wv) = quantized(&w, n, k, GgmlDType::Q8_0);
        let zero = vec![0f32; n];
        let by_q8_0 = reference_rounded(&x, GgmlDType::Q8_0, &wv, &zero, m, n, k);
        let by_q8k = reference_rounded(&x, GgmlDType::Q8K, &wv, &zero, m, n, k);
        let got = candle_product(q, &x, m, k);
        let kernel = crate::kernels::dispatch::candle_quantized_kernel(GgmlDType::Q8_0, m, n, k);
        let (want, other) = match kernel {
            crate::kernels::dispatch::Kernel::CandleRepack(_) => (&by_q8k, &by_q8_0),
            _ => (&by_q8_0, &by_q8k),
        };
        let max_diff = |a: &[f64]| {
            got.iter()
                .zip(a)
                .map(|(&g, &w)| (g as f64 - w).abs())
                .fold(0f64, f64::max)
        };
        eprintln!("candle's Q8_0 kernel here: {}", kernel.name());
        assert!(max_diff(want) <= 1e-3, "{kernel:?}: {}", max_diff(want));
        // The two roundings differ by far more than the tolerance, so the check can fail.
        assert!(max_diff(other) > 1e-2, "{kernel:?}: {}", max_diff(other));
    }

    /// One rounding of `x` by `round` into i16 values, then into bytes and block sums:
    /// (values, scale bits, bytes, sums).
    fn rounded_both_ways(
        x: &[f32],
        round: impl Fn(&[f32], &mut [f32], &mut Rounded),
    ) -> (Vec<i16>, Vec<u32>, Vec<u8>, Vec<i32>) {
        let blocks = x.len() / QK;
        let (mut q, mut d) = (vec![MaybeUninit::new(0i16); x.len()], vec![0f32; blocks]);
        round(x, &mut d, &mut Rounded::Values(&mut q));
        let (mut bytes, mut sums) = (vec![MaybeUninit::new(0u8); x.len()], vec![0i32; blocks]);
        let mut d_bytes = vec![0f32; blocks];
        round(
            x,
            &mut d_bytes,
            &mut Rounded::Bytes {
                bytes: &mut bytes,
                sums: &mut sums,
            },
        );
        assert_eq!(bits(&d), bits(&d_bytes));
        // SAFETY: initialised before the calls.
        let (q, bytes) = unsafe { (written(q), written(bytes)) };
        (q, bits(&d), bytes, sums)
    }

    #[test]
    fn the_vector_roundings_give_the_generic_loops_values() {
        if !PackedWeight::supported() {
            eprintln!("skipped: this CPU lacks AVX2");
            return;
        }
        // Random blocks at several magnitudes, then blocks built to hit the corners: values
        // exactly halfway between steps (a block whose maximum is 127 has d = 1), and one
        // float either side of them, zeros, NaN and infinities, subnormals (whose 1 / d
        // overflows) and the largest floats.
        let mut x: Vec<f32> = values(64 * QK, 11)
            .iter()
            .enumerate()
            .map(|(i, v)| v * [1e-3, 1.0, 1e4, 3e-39][i / (16 * QK)])
            .collect();
        // Maximum 127, so d = 1 and the others sit exactly halfway: -15.5 ..= 14.5.
        x.push(127.0);
        x.extend((1..QK).map(|i| i as f32 - 16.5));
        x.extend([0.0; QK]);
        x.extend((0..QK).map(|i| [f32::NAN, 1.0, -2.5, 0.5][i % 4]));
        x.extend((0..QK).map(|i| [f32::INFINITY, 3.0, f32::NEG_INFINITY, -0.0][i % 4]));
        x.extend((0..QK).map(|i| [1e-40, -3e-41, 0.0, 7e-45][i % 4]));
        x.extend((0..QK).map(|i| [f32::MAX, -f32::MAX, 1.0, -1e30][i % 4]));
        // d = 1 again; a float either side of each half from -7.5 to 7.5, and the halves
        // next to the range's ends.
        let beside = |v: f32, up: bool| {
            let toward_zero = (v > 0.0) != up;
            f32::from_bits(if toward_zero {
                v.to_bits() - 1
            } else {
                v.to_bits() + 1
            })
        };
        x.push(-127.0);
        x.extend((0..QK - 1).map(|i| beside(i as f32 / 2.0 - 7.25, i % 2 == 0)));
        x.push(127.0);
        x.extend((0..QK - 1).map(|i| [126.5, -126.5, 0.49999997, -0.49999997][i % 4]));
        let blocks = x.len() / QK;
        let want = rounded_both_ways(&x, round_blocks);
        let (q, ..) = &want;
        // The corners are there: halves away from zero, NaN to 0, saturation at -128.
        let at = |block: usize, i: usize| q[block * QK + i];
        assert_eq!(
            (at(64, 1), at(64, 16), at(64, 17), at(64, 31)),
            (-16, -1, 1, 15)
        );
        assert_eq!((at(66, 0), at(66, 2)), (0, -127));
        assert_eq!((at(68, 0), at(68, 1), at(68, 2)), (127, -128, 0));
        assert_eq!((at(71, 1), at(71, 2), at(71, 3)), (127, -127, 0));
        // The bytes are the values, and the sums theirs.
        let (q, _, bytes, sums) = &want;
        assert!(q.iter().zip(bytes).all(|(&q, &b)| q == i16::from(b as i8)));
        let block_sums: Vec<i32> = q
            .chunks_exact(QK)
            .map(|b| b.iter().map(|&v| i32::from(v)).sum())
            .collect();
        assert_eq!(sums, &block_sums);
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY (both closures): the CPU has AVX2 (checked above), or AVX-512F where the
            // skip below allows it; `rounded_both_ways` gives matching sizes.
            let avx2 = |x: &[f32], d: &mut [f32], out: &mut Rounded| unsafe {
                round_blocks_avx2(x, d, out)
            };
            assert!(rounded_both_ways(&x, avx2) == want, "AVX2");
            if !isa::skip(
                "the_vector_roundings_give_the_generic_loops_values",
                "avx512",
                isa::F32Level::Avx512.available(),
            ) {
                let avx512 = |x: &[f32], d: &mut [f32], out: &mut Rounded| unsafe {
                    round_blocks_avx512(x, d, out)
                };
                // The corner blocks first as well, so that they fall in the sixteen-block
                // groups and not only in the AVX2 loop's remainder.
                let corners_first: Vec<f32> =
                    x[64 * QK..].iter().chain(&x[..64 * QK]).copied().collect();
                assert!(rounded_both_ways(&x, avx512) == want, "AVX-512");
                let want = rounded_both_ways(&corners_first, round_blocks);
                assert!(rounded_both_ways(&corners_first, avx512) == want, "AVX-512");
            }
        }
        assert_eq!(blocks, 72);
    }

    #[test]
    fn a_row_does_not_depend_on_its_batch() {
        // 300 rows cross a row block (96), are split over threads by rows or by panels, and
        // reach PREFETCH_OUTPUTS_FROM_ROWS: the batch runs the kernels that fetch outputs, the
        // single rows the ones that fetch weights.
        let (m, n, k) = (300, 40, 1088);
        const _: () = assert!(PREFETCH_OUTPUTS_FROM_ROWS <= 300);
        let (x, b) = (values(m * k, 6), values(n, 7));
        let levels = levels("a_row_does_not_depend_on_its_batch");
        for (level, dtype) in levels
            .iter()
            .flat_map(|&l| [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4_1].map(|d| (l, d)))
        {
            let (q, _) = quantized(&values(n * k, 8), n, k, dtype);
            let weight = layout(&q, dtype, n, k, level);
            let mut batch = vec![0f32; m * n];
            weight.matmul_then(&x, m, Some(&b), &mut batch, 2, None);
            for i in [0, 3, 4, 7, 8, 11, 12, 95, 96, 199, 299] {
                let mut single = vec![0f32; n];
                weight.matmul_then(&x[i * k..(i + 1) * k], 1, Some(&b), &mut single, 1, None);
                assert_eq!(
                    single,
                    batch[i * n..(i + 1) * n],
                    "{level:?} {dtype:?} row {i}"
                );
            }
        }
    }

    #[test]
    fn the_epilogue_sees_every_finished_output_once() {
        // Two passes over k (the epilogue must follow the last only) and a partial panel.
        let (m, n, k) = (13, 45, 1088);
        let (x, b) = (values(m * k, 9), values(n, 10));
        // Q4_1's epilogue runs after its correction product, the others' in the kernel.
        for (level, dtype) in levels("the_epilogue_sees_every_finished_output_once")
            .into_iter()
            .flat_map(|l| [(l, GgmlDType::Q8_0), (l, GgmlDType::Q4_1)])
        {
            let (q, _) = quantized(&values(n * k, 11), n, k, dtype);
            let weight = layout(&q, dtype, n, k, level);
            let mut plain = vec![0f32; m * n];
            weight.matmul_then(&x, m, Some(&b), &mut plain, 2, None);
            let mut fused = vec![0f32; m * n];
            let square_plus_one = |xs: &mut [f32]| xs.iter_mut().for_each(|v| *v = *v * *v + 1.0);
            weight.matmul_then(
                &x,
                m,
                Some(&b),
                &mut fused,
                2,
                Some(Epilogue::Map(&square_plus_one)),
            );
            square_plus_one(&mut plain);
            assert_eq!(fused, plain, "{level:?} {dtype:?}");
        }
    }

    #[test]
    fn q4_1s_correction_is_added_as_after_the_whole_product() {
        // Q4_1 = the nibbles' product (as Q4_0's, from its bias) + the correction product
        // (from zero), summed once per output, then the epilogue: spread over the pool's
        // threads in stretches of rows, it must give what one pass over the whole output
        // gives. Tiles of every row count, a partial panel, one and two block passes, one and
        // two threads, with no epilogue and with GELU.
        for level in levels("q4_1s_correction_is_added_as_after_the_whole_product") {
            for (m, n, k, threads) in [(13, 45, 1088, 2), (5, 40, 64, 1), (37, 17, 96, 2)] {
                let x: Vec<f32> = values(m * k, 15).iter().map(|v| v * 3.0).collect();
                let b = values(n, 16);
                let (q, _) = quantized(&values(n * k, 17), n, k, GgmlDType::Q4_1);
                let mut weight = layout(&q, GgmlDType::Q4_1, n, k, level);
                let offsets = weight.min_offsets.take().expect("Q4_1 has its offsets");
                let mut want = vec![0f32; m * n];
                weight.matmul_then(&x, m, Some(&b), &mut want, threads, None);
                let rows = quantize_rows(&x, Some(quads::weight_offset(BlockFormat::Q4_0)));
                let scaled: Vec<f32> = rows
                    .d
                    .iter()
                    .zip(&rows.sums)
                    .map(|(&d, &s)| d * s as f32)
                    .collect();
                let mut correction = vec![0f32; m * n];
                offsets.matmul(&scaled, m, None, &mut correction, threads);
                want.iter_mut().zip(&correction).for_each(|(o, c)| *o += c);
                weight.min_offsets = Some(offsets);
                let case = format!("{level:?} {m}x{n}x{k}");
                let mut got = vec![f32::NAN; m * n];
                weight.matmul_then(&x, m, Some(&b), &mut got, threads, None);
                assert_eq!(bits(&got), bits(&want), "{case}");
                gelu_reference(&mut want, &case);
                let gelu = Some(Epilogue::GeluErf);
                weight.matmul_then(&x, m, Some(&b), &mut got, threads, gelu);
                assert_eq!(bits(&got), bits(&want), "{case}, GELU");
            }
        }
    }

    #[test]
    fn gelu_in_the_kernel_gives_the_in_place_gelus_bits() {
        // Every kernel applies GELU to its registers on the last block pass; every level and
        // format must give what the product followed by `gelu_erf_in_place` gives: tiles
        // of every row count, a partial panel, one and two block passes, both GELU tails.
        for (level, dtype) in levels("gelu_in_the_kernel_gives_the_in_place_gelus_bits")
            .into_iter()
            .flat_map(|l| [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4_1].map(|d| (l, d)))
        {
            for (m, n, k, threads) in [(13, 45, 1088, 2), (5, 40, 64, 1), (37, 17, 96, 2)] {
                let x: Vec<f32> = values(m * k, 12).iter().map(|v| v * 4.0).collect();
                let b = values(n, 13);
                let (q, _) = quantized(&values(n * k, 14), n, k, dtype);
                let weight = layout(&q, dtype, n, k, level);
                let mut want = vec![0f32; m * n];
                weight.matmul_then(&x, m, Some(&b), &mut want, threads, None);
                gelu_reference(&mut want, &format!("{level:?} {dtype:?} {m}x{n}x{k}"));
                let mut got = vec![f32::NAN; m * n];
                let gelu = Some(Epilogue::GeluErf);
                weight.matmul_then(&x, m, Some(&b), &mut got, threads, gelu);
                assert_eq!(bits(&got), bits(&want), "{level:?} {dtype:?} {m}x{n}x{k}");
            }
        }
    }

    #[test]
    fn every_level_gives_the_avx2_kernels_bits() {
        // The same exact block sums scaled in the same order: equal, not close. Inputs with
        // values at the extremes (-128 weights from the file, 127-magnitude inputs) and
        // shapes across both tiles' edges and passes.
        if isa::skip(
            "every_level_gives_the_avx2_kernels_bits",
            "avx2",
            IntLevel::Avx2.available(),
        ) {
            return;
        }
        let others: Vec<_> = levels("every_level_gives_the_avx2_kernels_bits")
            .into_iter()
            .filter(|&l| l != IntLevel::Avx2)
            .collect();
        for &(m, n, k, threads) in &[(1, 384, 384, 1), (13, 45, 1088, 2), (130, 40, 2080, 2)] {
            let (x, b) = (values(m * k, 31), values(n, 32));
            for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4_1] {
                let (q, _) = quantized(&values(n * k, 33), n, k, dtype);
                let mut bytes = q.data().unwrap().to_vec();
                if dtype == GgmlDType::Q8_0 {
                    // A -128 in the first block of the first row (ggml's quantizer never
                    // writes one; other tools may).
                    bytes[2] = 0x80;
                }
                let run = |level| {
                    let w = Int8Weight::from_blocks_for(format(dtype), &bytes, n, k, level);
                    let mut out = vec![0f32; m * n];
                    w.unwrap()
                        .matmul_then(&x, m, Some(&b), &mut out, threads, None);
                    out
                };
                let want = run(IntLevel::Avx2);
                for &level in &others {
                    assert!(run(level) == want, "{level:?} {dtype:?} {m}x{n}x{k}");
                }
            }
        }
    }

    #[test]
    fn q4_0_is_held_in_nibbles() {
        // 48 x 64: a byte (Q8_0) or half a byte (Q4_0) per value, 4 bytes per 32-value scale
        // (and 2 per block sum for Q8_0 at VNNI levels).
        for level in levels("q4_0_is_held_in_nibbles") {
            let sums = if level == IntLevel::Avx2 {
                0
            } else {
                48 * 2 * 2
            };
            for (dtype, bytes, held) in [
                (GgmlDType::Q8_0, 48 * 64 + 48 * 2 * 4, sums),
                (GgmlDType::Q4_0, 48 * 32 + 48 * 2 * 4, 0),
            ] {
                let (q, _) = quantized(&values(48 * 64, 14), 48, 64, dtype);
                let weight = layout(&q, dtype, 48, 64, level);
                assert_eq!(weight.weight_bytes(), bytes, "{dtype:?}");
                assert!(
                    weight.bytes() <= bytes + held + 64,
                    "{level:?} {dtype:?}: {}",
                    weight.bytes()
                );
            }
        }
    }

    #[test]
    fn an_output_full_of_garbage_is_overwritten_not_read() {
        // NaN in every output before the product: a value read before its first write would
        // come out NaN. One block pass and several (more than PASS_BLOCKS blocks), each
        // format, with and without bias; and a weight of depth zero, whose product is the bias.
        for level in levels("an_output_full_of_garbage_is_overwritten_not_read") {
            for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4_1] {
                for &(m, n, k) in &[(13, 45, 64), (250, 20, 40 * QK), (3, 5, 0)] {
                    let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
                    let weight = if k == 0 {
                        Int8Weight::from_blocks_for(format(dtype), &[], n, 0, level).unwrap()
                    } else {
                        layout(&quantized(&w, n, k, dtype).0, dtype, n, k, level)
                    };
                    for bias in [None, Some(&b[..])] {
                        let mut want = vec![0f32; m * n];
                        weight.matmul_then(&x, m, bias, &mut want, 2, None);
                        let mut got = vec![std::mem::MaybeUninit::new(f32::NAN); m * n];
                        weight.matmul_then_uninit(&x, m, bias, &mut got, 2, None);
                        // SAFETY: every element was initialised (to NaN) before the call.
                        let got: Vec<f32> =
                            got.iter().map(|v| unsafe { v.assume_init() }).collect();
                        assert!(got.iter().all(|v| v.is_finite()), "{level:?} {dtype:?} {k}");
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "{level:?} {dtype:?} {m}x{n}x{k} bias={}",
                            bias.is_some()
                        );
                        if k == 0 {
                            let bias_rows = bias.map_or(vec![0.0; m * n], |b| b.repeat(m));
                            assert_eq!(got, bias_rows);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn blocks_that_do_not_fit_the_shape_are_refused() {
        let (q, _) = quantized(&values(4 * 64, 12), 4, 64, GgmlDType::Q8_0);
        let bytes = q.data().unwrap();
        assert!(Int8Weight::from_blocks(BlockFormat::Q8_0, &bytes, 4, 63).is_none());
        assert!(Int8Weight::from_blocks(BlockFormat::Q8_0, &bytes, 5, 64).is_none());
        assert!(Int8Weight::from_blocks(BlockFormat::Q8_0, &bytes[1..], 4, 64).is_none());
    }

    #[test]
    #[should_panic(expected = "input is not 2 x 32")]
    fn wrong_input_size_is_refused() {
        if isa::skip(
            "wrong_input_size_is_refused",
            "avx2",
            IntLevel::Avx2.available(),
        ) {
            // should_panic wants the panic; its message says why it is not the real one.
            panic!("input is not 2 x 32 (skipped: no AVX2/FMA)");
        }
        let (q, _) = quantized(&values(3 * 32, 13), 3, 32, GgmlDType::Q8_0);
        let weight = layout(&q, GgmlDType::Q8_0, 3, 32, IntLevel::Avx2);
        weight.matmul_then(&[0.0; 33], 2, None, &mut [0.0; 6], 1, None);
    }
}
