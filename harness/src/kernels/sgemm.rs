//! f32 matrix products for linear layers, `y = x Wᵀ + b`, with the weight packed once at load
//! (issue 6).
//!
//! Why: candle multiplies through the `gemm` crate, which lays the weight out again on every
//! call; a BERT-base forward through it ran at about a third of this host's FMA peak, ONNX
//! Runtime's (MLAS, weights prepacked when the session starts) at about two thirds
//! (BENCHMARKS.md).
//! This is the classic BLIS/MLAS design for AVX2:
//!
//! - the weight `(n, k)` is stored as panels of [`NR`] = 16 output columns; panel `p` holds,
//!   for each `k`, the 16 values `W[16p + j][k]` side by side (zeros past `n`), so a
//!   `kc x 16` slice of a panel is one contiguous run that the kernel streams (`kc` up to 768,
//!   see `pass_depth`);
//! - the input rows are read where they are, [`MR`] = 6 rows a tile (12 at the AVX-512
//!   level), a block of at most [`MC`] rows at a time (see `Tile`'s `a` for why not a
//!   packed copy);
//! - a 6 x 16 microkernel keeps its outputs in twelve AVX registers and does 12 FMAs per
//!   two weight loads and six broadcasts;
//! - output columns (or, for very narrow layers, rows) are split over the cores once per call:
//!   one fork and one join per product, no synchronisation inside.
//!
//! Numerics: every output is `b[j]` followed by one FMA per `k`, in increasing `k`, whatever
//! the number of rows, the tile a row falls in or how the work is split; a row's result does
//! not depend on the batch it came in (tested bit for bit). Against an f64 reference the error
//! is the usual f32 dot-product rounding.
//!
//! Runs where the CPU has AVX2 and FMA (checked at run time, so one binary serves every
//! x86-64 machine); elsewhere [`PackedWeight::supported`] is false and layers stay on candle.
//! Where the CPU has AVX-512F the same panels are multiplied by a 12 x 32 microkernel in zmm
//! registers (`avx512`: two panels a tile, masked edges), chosen at run time
//! ([`super::isa`]); it adds the same products in the same order, so its outputs are the AVX2
//! kernel's bit for bit (tested).

mod avx512;

use super::isa::{self, F32Level};

/// What runs on finished outputs (an element-wise activation), from any thread: it is handed
/// them in stretches (a tile's outputs gathered into one, or part of a row) and must treat
/// each value alone.
#[derive(Clone, Copy)]
pub enum Epilogue<'a> {
    /// The exact GELU of [`super::ops::gelu_erf_in_place`], which every kernel applies to its
    /// accumulators before it stores them (same bits; tested).
    GeluErf,
    /// Any element-wise map.
    Map(&'a (dyn Fn(&mut [f32]) + Sync)),
}

impl<'a> Epilogue<'a> {
    /// Run the epilogue on `xs`.
    pub fn apply(&self, xs: &mut [f32]) {
        match self {
            Epilogue::GeluErf => super::ops::gelu_erf_in_place(xs),
            Epilogue::Map(f) => f(xs),
        }
    }

    /// How a pass of a GEMM finishes its tiles: whether the kernel applies GELU to its
    /// registers, else which epilogue runs on the stored tile (either only on the last pass).
    pub(super) fn for_pass(epilogue: Option<Self>, last: bool) -> (bool, Option<Self>) {
        match epilogue {
            Some(_) if !last => (false, None),
            Some(Epilogue::GeluErf) => (true, None),
            other => (false, other),
        }
    }
}

/// Output columns per weight panel (two AVX registers).
pub const NR: usize = 16;
/// Input rows per microkernel call of the AVX2 kernel (the AVX-512 kernel takes
/// `avx512::MR`).
pub const MR: usize = 6;
/// Passes over `k` go up to this deep, `k` cut into even passes (3072 into 4 x 768, 1536 into
/// 2 x 768). A pass's panel share (48 KiB, 96 KiB for the AVX-512 kernel's two panels) does
/// not fit L1, but the kernels' weight loads are two lines every six (AVX2) or twelve
/// (AVX-512) FMA cycles, which L2 feeds with the hardware prefetcher; what deeper passes save
/// is each extra pass's reload and store of every output tile. Against passes of 256: on a
/// Zen 3 host (AVX2), 3-10% more GFLOP/s on every BERT-base and MiniLM product shape
/// (session 18); on a Zen 5 host (AVX-512), 3-8% on BERT-base's at 1,024 rows, and deeper
/// still (1,024 to 3,072) was no better (session 21; both in BENCHMARKS.md).
const MAX_PASS_DEPTH: usize = 768;

/// How deep each pass over `k` goes.
fn pass_depth(k: usize) -> usize {
    k.div_ceil(k.div_ceil(MAX_PASS_DEPTH).max(1))
}
/// Rows of input per row block.
pub const MC: usize = 240;

/// From `2 x threads` times this many rows on, products are split into blocks of rows.
const ROWS_PER_BLOCK_JOB: usize = 120;
/// The largest and smallest row block of a row-split product ([`MC`]: a larger block is cut
/// into MC-row pieces anyway; four 6-row tiles: below that the weight's extra reads cost more
/// than the wait they save).
const MAX_BLOCK_ROWS: usize = MC;
const MIN_BLOCK_ROWS: usize = 24;

/// Products below this many multiply-adds run on the calling thread alone: a fork costs more
/// than they take.
const MIN_PARALLEL_MACS: usize = 1 << 18;

/// A weight `(n, k)` laid out in 16-column panels for [`PackedWeight::matmul`].
pub struct PackedWeight {
    n: usize,
    k: usize,
    /// The microkernel that multiplies it (the layout is the same for every level).
    level: F32Level,
    /// Panels, starting at `offset` so that every panel row is 64-byte aligned.
    data: Vec<f32>,
    offset: usize,
}

impl PackedWeight {
    /// Whether this CPU runs the packed kernels.
    pub fn supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Pack a row-major weight of `n` rows (output features) by `k` columns (input features),
    /// for the best kernel level of this host.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        Self::pack_for(w, n, k, isa::f32_level().unwrap_or(F32Level::Avx2))
    }

    /// [`Self::pack`] for the kernels of `level` (tests compare the levels on one host;
    /// multiplying needs a CPU that has it).
    pub fn pack_for(w: &[f32], n: usize, k: usize, level: F32Level) -> Self {
        assert_eq!(w.len(), n * k, "weight is not {n} x {k}");
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR + NR];
        let offset = data.as_ptr().align_offset(64).min(NR);
        let packed = &mut data[offset..];
        for (j, row) in w.chunks_exact(k.max(1)).enumerate().take(n) {
            let (p, col) = (j / NR, j % NR);
            let panel = &mut packed[p * k * NR..(p + 1) * k * NR];
            for (kk, &v) in row.iter().enumerate() {
                panel[kk * NR + col] = v;
            }
        }
        PackedWeight {
            n,
            k,
            level,
            data,
            offset,
        }
    }

    /// The kernel level that multiplies this weight.
    pub fn level(&self) -> F32Level {
        self.level
    }

    /// The weight back in row-major `(n, k)` order (exactly the values packed).
    pub fn unpack(&self) -> Vec<f32> {
        let packed = self.panels();
        let mut w = vec![0f32; self.n * self.k];
        for (j, row) in w.chunks_exact_mut(self.k.max(1)).enumerate().take(self.n) {
            let (p, col) = (j / NR, j % NR);
            for (kk, v) in row.iter_mut().enumerate() {
                *v = packed[(p * self.k + kk) * NR + col];
            }
        }
        w
    }

    /// Bytes held, padding included.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }

    fn panels(&self) -> &[f32] {
        &self.data[self.offset..]
    }

    /// `out (m, n) = x (m, k) Wᵀ + bias`, split over up to `threads` threads.
    ///
    /// Panics when the slices do not have the stated sizes or the CPU lacks AVX2/FMA
    /// (callers check [`PackedWeight::supported`] when packing).
    pub fn matmul(
        &self,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        out: &mut [f32],
        threads: usize,
    ) {
        self.matmul_then(x, m, bias, out, threads, None)
    }

    /// One thread's share: rows `rows` of the output, column panels `cols`, in passes over `k`.
    unsafe fn block(
        &self,
        op: &Operands,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) {
        let Operands {
            x,
            bias,
            epilogue,
            out,
        } = *op;
        let (n, k) = (self.n, self.k);
        let depth = pass_depth(k);
        let packed = self.panels();
        // Rows and column panels one microkernel call covers.
        let (mr, pw) = (self.tile_rows(), self.tile_panels());
        let mut m0 = rows.start;
        while m0 < rows.end {
            let mc = MC.min(rows.end - m0);
            let mut k0 = 0;
            while k0 < k {
                let kc = depth.min(k - k0);
                // The kernel applies GELU to its registers; any other epilogue runs on the
                // stored tile.
                let (in_kernel, on_tile) = Epilogue::for_pass(epilogue, k0 + kc == k);
                for p in cols.clone().step_by(pw) {
                    let panels = pw.min(cols.end - p);
                    let width = (panels * NR).min(n - p * NR);
                    let mut tile_bias = [0f32; 2 * NR];
                    let init = Init::for_pass(k0 == 0, bias, p * NR, width, &mut tile_bias);
                    let b = packed[(p * k + k0) * NR..].as_ptr();
                    let tiles = mc.div_ceil(mr);
                    let next_panel = if p + panels < cols.end {
                        packed[((p + panels) * k + k0) * NR..].as_ptr()
                    } else {
                        std::ptr::null()
                    };
                    for t in 0..tiles {
                        let (first, r) = tile_span(mc, mr, t);
                        let c = out.0.add((m0 + first) * n + p * NR);
                        // The next tile's output rows, fetched while this one computes: on
                        // later passes over k they are read back, and after the first pass
                        // they are rarely still in cache (a 240-row block of a 3072-wide
                        // output is 2.9 MiB).
                        let next = if t + 1 < tiles {
                            (c.add(r * n), tile_span(mc, mr, t + 1).1)
                        } else {
                            (std::ptr::null_mut(), 0)
                        };
                        let next_b = if t == 0 { next_panel } else { std::ptr::null() };
                        let tile = Tile {
                            gelu: in_kernel,
                            kc,
                            a: x[(m0 + first) * k + k0..].as_ptr(),
                            lda: k,
                            b,
                            panel_stride: k * NR,
                            panels,
                            c,
                            ldc: n,
                            width,
                            init,
                            bias: &tile_bias,
                            next,
                            next_b,
                        };
                        match self.level {
                            F32Level::Avx512 => avx512::tile(r, &tile),
                            F32Level::Avx2 => match r {
                                6 => kernel::<6>(&tile),
                                5 => kernel::<5>(&tile),
                                4 => kernel::<4>(&tile),
                                3 => kernel::<3>(&tile),
                                2 => kernel::<2>(&tile),
                                _ => kernel::<1>(&tile),
                            },
                        }
                        if let Some(f) = on_tile {
                            epilogue_on_tile(f, c, n, r, width);
                        }
                    }
                }
                k0 += kc;
            }
            m0 += mc;
        }
    }

    /// Input rows per microkernel call at this weight's level.
    fn tile_rows(&self) -> usize {
        match self.level {
            F32Level::Avx512 => avx512::MR,
            F32Level::Avx2 => MR,
        }
    }

    /// Column panels per microkernel call at this weight's level.
    fn tile_panels(&self) -> usize {
        match self.level {
            F32Level::Avx512 => 2,
            F32Level::Avx2 => 1,
        }
    }
}

/// A weight laid out for one of this crate's CPU GEMMs (f32 [`PackedWeight`], Q8_0/Q4_0
/// [`Int8Weight`](super::qgemm::Int8Weight)): what a packed linear layer runs.
pub trait PackedGemm: Sync {
    /// Output features.
    fn n(&self) -> usize;
    /// Input features.
    fn k(&self) -> usize;
    /// `out (m, n) = x (m, k) Wᵀ + bias`, split over up to `threads` threads, then `epilogue`
    /// on every output once, while its tile is in L1 (gathered into one stretch of at most a
    /// tile's outputs; [`Epilogue::GeluErf`] on the AVX2 kernel's registers): an activation
    /// fused into the product. Panics when the slices do not have the stated sizes.
    fn matmul_then(
        &self,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        out: &mut [f32],
        threads: usize,
        epilogue: Option<Epilogue>,
    ) {
        // SAFETY: initialised values are valid `MaybeUninit`s, and the product writes only f32s.
        let out = unsafe {
            std::slice::from_raw_parts_mut(
                out.as_mut_ptr().cast::<std::mem::MaybeUninit<f32>>(),
                out.len(),
            )
        };
        self.matmul_then_uninit(x, m, bias, out, threads, epilogue)
    }

    /// [`Self::matmul_then`] into an output that need not be initialised: when it returns,
    /// every one of the `m x n` values has been written, none read before (callers rely on
    /// this to skip zero-filling a fresh buffer).
    fn matmul_then_uninit(
        &self,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        out: &mut [std::mem::MaybeUninit<f32>],
        threads: usize,
        epilogue: Option<Epilogue>,
    );
}

impl PackedGemm for PackedWeight {
    /// Output features.
    fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    fn k(&self) -> usize {
        self.k
    }

    /// [`PackedWeight::matmul`], then `epilogue` on every output once, each tile's gathered
    /// while it is in L1: an activation fused into the product. The first pass over `k` of
    /// every tile stores its outputs without reading them, so the output needs no zero-fill
    /// (that memset was 1.4% of a BERT-base 8 x 128 pass).
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
        assert!(
            self.level.available(),
            "packed GEMM at {} needs a CPU with it",
            self.level.name()
        );
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            return bias_only(out, n, bias, epilogue);
        }
        let out_ptr = SendPtr(out.as_mut_ptr().cast::<f32>());
        let jobs = split_jobs(
            m,
            n.div_ceil(NR),
            m * n * k,
            threads,
            self.tile_rows(),
            self.tile_panels(),
        );
        run_jobs(jobs, |(rows, cols)| {
            // SAFETY: jobs cover disjoint rows or disjoint column panels of `out`, each
            // written only by its own job; the CPU features were checked above.
            unsafe {
                self.block(
                    &Operands {
                        x,
                        bias,
                        epilogue,
                        out: out_ptr,
                    },
                    rows,
                    cols,
                )
            }
        });
    }
}

/// What every thread of one product reads, and the output it writes its part of.
#[derive(Clone, Copy)]
struct Operands<'a> {
    x: &'a [f32],
    bias: Option<&'a [f32]>,
    epilogue: Option<Epilogue<'a>>,
    out: SendPtr,
}

/// The output pointer, shared by the threads of one product (each writes its own part).
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Panic unless `x` is `m x k`, the output `out_len` is `m x n` and `bias` (if any) is `n` long.
pub(super) fn check_operands(
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    out_len: usize,
) {
    assert_eq!(x.len(), m * k, "input is not {m} x {k}");
    assert_eq!(out_len, m * n, "output is not {m} x {n}");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias is not {n} long");
    }
}

/// Rows and column panels of one thread's share of a product.
pub(super) type Job = (std::ops::Range<usize>, std::ops::Range<usize>);

/// Split a product of `m` rows, `panels` column panels and `macs` multiply-adds over up to
/// `threads` threads: many rows into blocks of rows, several per thread; otherwise by column
/// panels when there are enough to go round (each thread then reads only its share of the
/// weight), in multiples of `pw` panels (a microkernel's width), else by rows in multiples of
/// `mr`; small products stay on one thread (a fork costs more than they take).
pub(super) fn split_jobs(
    m: usize,
    panels: usize,
    macs: usize,
    threads: usize,
    mr: usize,
    pw: usize,
) -> Vec<Job> {
    let threads = if macs < MIN_PARALLEL_MACS {
        1
    } else {
        threads.max(1)
    };
    if threads == 1 {
        vec![(0..m, 0..panels)]
    } else if m >= 2 * threads * ROWS_PER_BLOCK_JOB {
        // Many rows: blocks of rows, taken in turn. A thread that finishes early takes the
        // next block instead of waiting at the barrier for the other (the cores of a VM do not
        // run at one speed: 5% of a BERT-base 8 x 128 pass was spent so), and each block packs
        // only its own rows (split by columns, every thread packs all of them). Blocks shrink
        // as the rows run out (guided scheduling: a fraction of what is left, at least
        // MIN_BLOCK_ROWS), so the last blocks are small and so is the wait for whoever takes
        // them; with eight equal blocks the barrier waits were still 3% of that pass.
        let mut jobs = Vec::new();
        let mut r = 0;
        while r < m {
            let size = ((m - r) / (2 * threads))
                .clamp(MIN_BLOCK_ROWS, MAX_BLOCK_ROWS)
                .next_multiple_of(mr)
                .min(m - r);
            jobs.push((r..r + size, 0..panels));
            r += size;
        }
        jobs
    } else if panels >= 2 * threads || m < mr * threads {
        let per = panels.div_ceil(threads).next_multiple_of(pw);
        (0..panels)
            .step_by(per)
            .map(|p| (0..m, p..(p + per).min(panels)))
            .collect()
    } else {
        let per = m.div_ceil(threads).next_multiple_of(mr);
        (0..m)
            .step_by(per)
            .map(|r| (r..(r + per).min(m), 0..panels))
            .collect()
    }
}

/// The product of a weight of depth 0: every row of `out` (rows of `n`) is the bias (or
/// zeros), then `epilogue` on the row.
pub(super) fn bias_only(
    out: &mut [std::mem::MaybeUninit<f32>],
    n: usize,
    bias: Option<&[f32]>,
    epilogue: Option<Epilogue>,
) {
    for row in out.chunks_exact_mut(n) {
        for (j, v) in row.iter_mut().enumerate() {
            v.write(bias.map_or(0.0, |b| b[j]));
        }
        if let Some(f) = epilogue {
            // SAFETY: the row was just written.
            f.apply(unsafe { std::slice::from_raw_parts_mut(row.as_mut_ptr().cast(), n) });
        }
    }
}

/// Most outputs one microkernel tile holds at any level (AVX-512: 12 rows x 32 columns; the
/// integer GEMM's tiles are at most as many rows by [`NR`]).
const TILE_VALUES: usize = avx512::MR * W2;

/// Run `f` on a finished tile of `rows` output rows of `width` values, `ld` apart, copied into
/// one stretch and back (all in L1), so that an activation sees a tile's outputs in one call:
/// GELU interleaves four vectors' dependency chains, which a row's 16 values (two vectors)
/// could not fill (`ops::gelu_erf_in_place`). Compiled for AVX2, which every caller's kernel
/// needs: full-width rows then move as the 32-byte registers the microkernel stored them
/// from (16-byte loads of them missed store-to-load forwarding and took most of what the
/// gathering saves, as did a `memcpy` call per row).
///
/// # Safety
/// The CPU must have AVX2; the rows must lie inside one allocation and be written by nobody
/// else meanwhile.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2"))]
pub(super) unsafe fn epilogue_on_tile(
    f: Epilogue,
    c: *mut f32,
    ld: usize,
    rows: usize,
    width: usize,
) {
    if rows == 1 {
        return f.apply(std::slice::from_raw_parts_mut(c, width));
    }
    assert!(
        rows * width <= TILE_VALUES,
        "{rows} x {width} is not a tile"
    );
    let mut tile = [std::mem::MaybeUninit::<f32>::uninit(); TILE_VALUES];
    let stretch = tile.as_mut_ptr().cast::<f32>();
    let copy = |from: *const f32, to: *mut f32| match width {
        NR => to
            .cast::<[f32; NR]>()
            .write_unaligned(from.cast::<[f32; NR]>().read_unaligned()),
        W2 => to
            .cast::<[f32; W2]>()
            .write_unaligned(from.cast::<[f32; W2]>().read_unaligned()),
        _ => std::ptr::copy_nonoverlapping(from, to, width),
    };
    for i in 0..rows {
        copy(c.add(i * ld), stretch.add(i * width));
    }
    f.apply(std::slice::from_raw_parts_mut(stretch, rows * width));
    for i in 0..rows {
        copy(stretch.add(i * width), c.add(i * ld));
    }
}

/// Two panels' width (the AVX-512 tile's).
const W2: usize = 2 * NR;

/// Run `jobs` on the kernels' pool ([`super::pool`]), the calling thread taking one.
pub(super) fn run_jobs(jobs: Vec<Job>, run: impl Fn(Job) + Sync + Send) {
    super::pool::for_each_job(jobs.len(), |i| run(jobs[i].clone()));
}

/// The rows of tile `t` of a block of `mc` rows in tiles of `mr`: `(first row, rows)`.
///
/// Tiles are `mr` rows but for the last two when the last would have at most `mr / 2`: those
/// two share their rows evenly (6 + 2 rows become 4 + 4). A tile of one or two rows keeps too
/// few sums in flight to hide the FMA latency: it takes two thirds of a full tile's time for
/// a third of its work (3% of a BERT-base 1 x 128 pass, 128 = 21 x 6 + 2), and at the 12-53
/// tokens of an STS-B sentence such a tile is a larger share still.
pub(super) fn tile_span(mc: usize, mr: usize, t: usize) -> (usize, usize) {
    let (full, rest) = (mc / mr, mc % mr);
    if rest == 0 || 2 * rest > mr || full == 0 || t + 1 < full {
        return (t * mr, mr.min(mc - t * mr));
    }
    let shared = mr + rest;
    let first = shared.div_ceil(2);
    let start = (full - 1) * mr;
    if t + 1 == full {
        (start, first)
    } else {
        (start + first, shared - first)
    }
}

/// Eight registers of eight values transposed: lane `i` of output `j` is lane `j` of input `i`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn transpose8(
    r: [std::arch::x86_64::__m256; 8],
) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves exchanged.
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// What a tile's accumulators start from.
#[derive(Clone, Copy)]
pub(super) enum Init {
    /// The first pass over `k` of a layer without bias.
    Zero,
    /// The first pass, starting from the bias.
    Bias,
    /// A later pass: continue from what the output holds.
    Accumulate,
}

impl Init {
    /// What the tile over output columns `col..col + width` starts from on a pass over `k`
    /// (`first`: the pass at depth 0), copying the bias of those columns into `tile_bias`
    /// when it starts from the bias.
    pub(super) fn for_pass(
        first: bool,
        bias: Option<&[f32]>,
        col: usize,
        width: usize,
        tile_bias: &mut [f32],
    ) -> Init {
        match bias {
            _ if !first => Init::Accumulate,
            Some(b) => {
                tile_bias[..width].copy_from_slice(&b[col..col + width]);
                Init::Bias
            }
            None => Init::Zero,
        }
    }
}

/// One microkernel call: `c (R x width) (+)= a (R x kc) b (kc x 16·panels)`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Tile<'a> {
    /// Whether the kernel applies GELU to the finished outputs before storing them (on the
    /// last pass over `k`).
    gelu: bool,
    kc: usize,
    /// The tile's first input row, at the pass's first `k`; the next rows are `lda` apart.
    ///
    /// Why rows in place rather than a packed copy (each tile's rows interleaved, as BLIS and
    /// MLAS do): a product of up to a few hundred rows is split by columns, so every thread
    /// packed every row, and reused them for only `n / 16` panels (packing was 1.8-2.4% of a
    /// batch-1 pass: DistilBERT 1 x 128, MiniLM 1 x 32); a row block of a larger product is
    /// packed once per pass, yet the copy was still 2.1% of MiniLM 32 x 32 (and 2.1% of a
    /// BERT-base 8 x 128 pass at the AVX-512 level). Broadcasting from six (or twelve) rows
    /// instead of one packed run costs nothing the L1 and its prefetchers do not hide:
    /// alternating in one process, 2 threads, every BERT-base and MiniLM product shape from 32
    /// to 4,096 rows ran 1-7% faster in place on a Zen 3 host (AVX2, session 19), 2-8% faster
    /// from 16 to 1,024 rows on a Zen 5 host (AVX-512, session 21).
    a: *const f32,
    lda: usize,
    /// The first panel's weights for this pass; the next panel's are `panel_stride` floats on.
    b: *const f32,
    panel_stride: usize,
    /// Column panels in the tile (1, or 2 for the AVX-512 kernel).
    panels: usize,
    c: *mut f32,
    ldc: usize,
    /// Output columns in the tile, at most `16 · panels`.
    width: usize,
    init: Init,
    bias: &'a [f32; 2 * NR],
    /// Output rows of the next tile (start, count) to prefetch.
    next: (*mut f32, usize),
    /// The next panel's weights for this pass, to prefetch (null: none).
    next_b: *const f32,
}

/// The AVX2 microkernel: `R` rows (in place, `lda` apart) by one panel over one pass.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize>(t: &Tile) {
    use std::arch::x86_64::*;
    for i in 0..t.next.1 {
        let c = t.next.0.wrapping_add(i * t.ldc) as *const i8;
        _mm_prefetch::<_MM_HINT_T0>(c);
        _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(NR * 4 - 1));
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    match t.init {
        Init::Zero => {}
        Init::Bias => {
            debug_assert_eq!(t.panels, 1);
            let b0 = _mm256_loadu_ps(t.bias.as_ptr());
            let b1 = _mm256_loadu_ps(t.bias.as_ptr().add(8));
            for row in acc.iter_mut() {
                *row = [b0, b1];
            }
        }
        Init::Accumulate => {
            for (i, row) in acc.iter_mut().enumerate() {
                *row = load_output_row(t.c.add(i * t.ldc), t.width);
            }
        }
    }
    let (mut a, mut b) = (t.a, t.b);
    let mut nb = if t.next_b.is_null() { t.b } else { t.next_b };
    for _ in 0..t.kc {
        // (The rows need no software prefetch: each row is one sequential stream, which the
        // hardware prefetchers follow; the packed run of the AVX-512 kernel does need it.)
        // The first tile of a panel also pulls in the next panel's weights (one 64-byte line
        // per step), which would otherwise arrive from L3 a line at a time when that panel
        // starts; later tiles re-prefetch lines already in L1, which costs a load slot only.
        // (Prefetches never fault; the addresses are formed with wrapping arithmetic.)
        _mm_prefetch::<_MM_HINT_T0>(nb as *const i8);
        nb = nb.wrapping_add(NR);
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
        for (i, row) in acc.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*a.add(i * t.lda));
            row[0] = _mm256_fmadd_ps(av, b0, row[0]);
            row[1] = _mm256_fmadd_ps(av, b1, row[1]);
        }
        a = a.add(1);
        b = b.add(NR);
    }
    if t.gelu {
        acc = super::ops::gelu_on_ymm_tile(acc);
    }
    for (i, row) in acc.iter().enumerate() {
        store_output_row(t.c.add(i * t.ldc), t.width, *row);
    }
}

/// The first `width` (at most [`NR`]) outputs at `c` as two registers, zeros past `width`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn load_output_row(
    c: *const f32,
    width: usize,
) -> [std::arch::x86_64::__m256; 2] {
    use std::arch::x86_64::*;
    if width == NR {
        [_mm256_loadu_ps(c), _mm256_loadu_ps(c.add(8))]
    } else {
        let mut tmp = [0f32; NR];
        std::ptr::copy_nonoverlapping(c, tmp.as_mut_ptr(), width);
        [
            _mm256_loadu_ps(tmp.as_ptr()),
            _mm256_loadu_ps(tmp.as_ptr().add(8)),
        ]
    }
}

/// Store the first `width` (at most [`NR`]) lanes of `row` at `c`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn store_output_row(
    c: *mut f32,
    width: usize,
    row: [std::arch::x86_64::__m256; 2],
) {
    use std::arch::x86_64::*;
    if width == NR {
        _mm256_storeu_ps(c, row[0]);
        _mm256_storeu_ps(c.add(8), row[1]);
    } else {
        let mut tmp = [0f32; NR];
        _mm256_storeu_ps(tmp.as_mut_ptr(), row[0]);
        _mm256_storeu_ps(tmp.as_mut_ptr().add(8), row[1]);
        std::ptr::copy_nonoverlapping(tmp.as_ptr(), c, width);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel<const R: usize>(_: &Tile) {
    unreachable!("PackedWeight::supported() is false off x86-64")
}

/// The GELU tests' reference: `plain` (a product's outputs) through `ops::gelu_erf_in_place`,
/// after checking that they reach past both of the erf's clamps (|x / sqrt 2| > 4), so that
/// both of GELU's tails and its middle are exercised.
#[cfg(test)]
pub(crate) fn gelu_reference(plain: &mut [f32], what: &str) {
    let (lo, hi) = plain
        .iter()
        .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert!(
        lo < -6.0 && hi > 6.0,
        "{what}: outputs only span {lo}..{hi}"
    );
    super::ops::gelu_erf_in_place(plain);
}

/// `len` pseudo-random values in [-1, 1) from `seed`: the GEMM tests' inputs.
#[cfg(test)]
pub(crate) fn test_values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = reports::stats::SplitMix64(seed);
    (0..len).map(|_| rng.next_signed_unit_f32()).collect()
}

#[cfg(test)]
mod tests {
    use super::test_values as values;
    use super::*;
    use crate::kernels::bits;

    #[test]
    fn jobs_cover_every_row_and_panel_once() {
        // (m, panels, threads, mr, pw): one thread, column splits, few rows, and row blocks.
        for (m, panels, threads, mr, pw) in [
            (7, 48, 1, 6, 1),
            (16, 72, 2, 6, 1),
            (5, 3, 2, 6, 1),
            (100, 2, 2, 6, 1),
            (480, 192, 2, 6, 1),
            (1024, 48, 2, 6, 1),
            (4096, 96, 2, 12, 2),
            (1000, 24, 3, 12, 2),
        ] {
            let jobs = split_jobs(m, panels, usize::MAX, threads, mr, pw);
            let mut seen = vec![0u8; m * panels];
            for (rows, cols) in &jobs {
                assert!(
                    rows.start % mr == 0 && cols.start % pw == 0,
                    "{m} x {panels}"
                );
                for r in rows.clone() {
                    for c in cols.clone() {
                        seen[r * panels + c] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&v| v == 1), "{m} x {panels}: {jobs:?}");
            if m >= 2 * threads * ROWS_PER_BLOCK_JOB {
                // Row blocks, more than one per thread, within the bounds but the last, no
                // larger than the one before (guided), the last ones small.
                assert!(jobs.len() > threads, "{m} rows: {jobs:?}");
                let sizes: Vec<usize> = jobs.iter().map(|(r, _)| r.len()).collect();
                assert!(sizes[..sizes.len() - 1]
                    .iter()
                    .all(|&s| (MIN_BLOCK_ROWS..MAX_BLOCK_ROWS + mr).contains(&s)));
                assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{sizes:?}");
                assert!(sizes[sizes.len() - 1] <= MIN_BLOCK_ROWS + mr, "{sizes:?}");
            }
        }
    }

    /// `x Wᵀ + b` in f64, the reference.
    fn reference(
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|kk| x[i * k + kk] as f64 * w[j * k + kk] as f64)
                    .sum();
                out[i * n + j] = dot + b.map_or(0.0, |b| b[j] as f64);
            }
        }
        out
    }

    /// Both levels, each where the host has it (the others say they were skipped).
    fn levels(test: &str) -> Vec<F32Level> {
        [F32Level::Avx2, F32Level::Avx512]
            .into_iter()
            .filter(|l| !isa::skip(test, l.name(), l.available()))
            .collect()
    }

    fn run(level: F32Level, m: usize, n: usize, k: usize, with_bias: bool, threads: usize) {
        let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
        let bias = with_bias.then_some(&b[..]);
        let packed = PackedWeight::pack_for(&w, n, k, level);
        let mut out = vec![f32::NAN; m * n];
        packed.matmul(&x, m, bias, &mut out, threads);
        let want = reference(&x, &w, bias, m, n, k);
        // f32 accumulation of k products of values in [-1, 1]: error grows like sqrt(k) ulps
        // of the partial sums; 1e-5 * sqrt(k) is ten times what is seen.
        let tol = 1e-5 * (k as f64).sqrt().max(1.0);
        for (i, (&got, &want)) in out.iter().zip(&want).enumerate() {
            assert!(
                (got as f64 - want).abs() <= tol,
                "{level:?} {m}x{n}x{k} bias={with_bias} threads={threads}: element {i} is {got}, \
                 want {want}"
            );
        }
    }

    #[test]
    fn tiles_cover_the_rows_in_order_without_a_thin_last_tile() {
        for mr in [MR, avx512::MR] {
            for mc in 1..=3 * mr + 1 {
                let tiles: Vec<_> = (0..mc.div_ceil(mr)).map(|t| tile_span(mc, mr, t)).collect();
                let mut next = 0;
                for &(first, rows) in &tiles {
                    assert!(
                        first == next && (1..=mr).contains(&rows),
                        "{mc}/{mr}: {tiles:?}"
                    );
                    next += rows;
                }
                assert_eq!(next, mc, "{mc}/{mr}: {tiles:?}");
                // No tile under half a full one, unless the block itself is smaller.
                let thinnest = tiles.iter().map(|t| t.1).min().unwrap();
                assert!(mc < mr || 2 * thinnest >= mr, "{mc}/{mr}: {tiles:?}");
            }
        }
        assert_eq!(tile_span(128, 6, 20), (120, 4));
        assert_eq!(tile_span(128, 6, 21), (124, 4));
        assert_eq!(tile_span(13, 6, 1), (6, 4));
        assert_eq!(tile_span(13, 6, 2), (10, 3));
    }

    #[test]
    fn passes_cover_the_depth_evenly_up_to_the_limit() {
        for (k, depth) in [
            (1, 1),
            (384, 384),
            (768, 768),
            (769, 385),
            (1000, 500),
            (1536, 768),
            (2305, 577),
            (3072, 768),
        ] {
            assert_eq!(pass_depth(k), depth, "k = {k}");
        }
    }

    #[test]
    fn matches_f64_reference_on_edge_shapes() {
        // Rows and columns that are not multiples of either tile (6 x 16, 12 x 32), depths
        // in one pass and in several of uneven depth (1000: 500 + 500; 1601: 534 + 534 + 533),
        // more rows than MC, one
        // row, one column, an odd number of panels (the AVX-512 kernel's last tile has one).
        for level in levels("matches_f64_reference_on_edge_shapes") {
            for &(m, n, k) in &[
                (1, 1, 1),
                (1, 16, 8),
                (7, 17, 3),
                (6, 32, 256),
                (13, 45, 300),
                (250, 20, 520),
                (2, 100, 64),
                (128, 48, 768),
                (9, 40, 1000),
                (14, 35, 1601),
                (25, 80, 40),
                (12, 33, 17),
            ] {
                for bias in [false, true] {
                    for threads in [1, 2, 3] {
                        run(level, m, n, k, bias, threads);
                    }
                }
            }
        }
    }

    #[test]
    fn avx512_gives_the_avx2_kernels_bits() {
        // The same products in the same order: not close, equal. Shapes cross both tiles'
        // edges, several passes over `k` and MC blocks, with and without bias, split by rows
        // and by panels.
        if isa::skip(
            "avx512_gives_the_avx2_kernels_bits",
            "avx512",
            F32Level::Avx512.available(),
        ) {
            return;
        }
        for &(m, n, k, threads) in &[
            (1, 384, 384, 1),
            (13, 45, 300, 2),
            (250, 100, 520, 2),
            (9, 40, 1000, 2),
            (14, 35, 1601, 2),
            (32, 1536, 384, 2),
            (7, 17, 3, 1),
        ] {
            let (x, w, b) = (values(m * k, 21), values(n * k, 22), values(n, 23));
            for bias in [None, Some(&b[..])] {
                let mut out = [vec![0f32; m * n], vec![0f32; m * n]];
                for (level, out) in [F32Level::Avx2, F32Level::Avx512].iter().zip(&mut out) {
                    PackedWeight::pack_for(&w, n, k, *level).matmul(&x, m, bias, out, threads);
                }
                assert!(out[0] == out[1], "{m}x{n}x{k} bias={}", bias.is_some());
            }
        }
    }

    #[test]
    fn an_output_full_of_garbage_is_overwritten_not_read() {
        // NaN in every output before the product: a value read before its first write would
        // come out NaN. Depths of one pass, several, and zero; with and without bias.
        for level in levels("an_output_full_of_garbage_is_overwritten_not_read") {
            for &(m, n, k) in &[(13, 45, 300), (7, 17, 3), (250, 20, 520), (3, 5, 0)] {
                let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
                let packed = PackedWeight::pack_for(&w, n, k, level);
                for bias in [None, Some(&b[..])] {
                    let mut want = vec![0f32; m * n];
                    packed.matmul(&x, m, bias, &mut want, 2);
                    let mut got = vec![std::mem::MaybeUninit::new(f32::NAN); m * n];
                    packed.matmul_then_uninit(&x, m, bias, &mut got, 2, None);
                    // SAFETY: every element was initialised (to NaN) before the call.
                    let got: Vec<f32> = got.iter().map(|v| unsafe { v.assume_init() }).collect();
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{level:?} {m}x{n}x{k} bias={}",
                        bias.is_some()
                    );
                }
            }
        }
    }

    #[test]
    fn zero_depth_gives_the_bias() {
        for level in levels("zero_depth_gives_the_bias") {
            let packed = PackedWeight::pack_for(&[], 3, 0, level);
            let mut out = vec![f32::NAN; 6];
            packed.matmul(&[], 2, Some(&[1.0, 2.0, 3.0]), &mut out, 2);
            assert_eq!(out, vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        }
    }

    #[test]
    fn a_row_does_not_depend_on_its_batch() {
        // 300 rows cross an MC block boundary and are split over threads by rows or panels;
        // each row alone, and runs of rows within and across blocks, split either way, must
        // give exactly the same bits; 1000 deep is two passes at AVX2 (four at AVX-512).
        for level in levels("a_row_does_not_depend_on_its_batch") {
            for (m, n, k) in [(300, 40, 600), (300, 40, 1000)] {
                let (x, w, b) = (values(m * k, 4), values(n * k, 5), values(n, 6));
                let packed = PackedWeight::pack_for(&w, n, k, level);
                let mut batch = vec![0f32; m * n];
                packed.matmul(&x, m, Some(&b), &mut batch, 2);
                let runs = [
                    0..1,
                    5..6,
                    6..7,
                    11..12,
                    12..13,
                    239..240,
                    240..241,
                    299..300,
                ];
                for rows in runs.into_iter().chain([0..13, 5..133, 60..300, 240..300]) {
                    for threads in [1, 2] {
                        let mut part = vec![0f32; rows.len() * n];
                        let x = &x[rows.start * k..rows.end * k];
                        packed.matmul(x, rows.len(), Some(&b), &mut part, threads);
                        assert_eq!(
                            part,
                            batch[rows.start * n..rows.end * n],
                            "{level:?} {m}x{n}x{k} rows {rows:?} on {threads} threads"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_epilogue_sees_every_finished_output_once() {
        // Depths of several passes at every level (1000: two passes with AVX2, four with
        // AVX-512; 520: three with AVX-512; the epilogue must run after the last only) and of
        // one, widths that leave a partial panel, both ways of splitting.
        let levels = levels("the_epilogue_sees_every_finished_output_once");
        for (level, &(m, n, k, threads)) in levels.iter().flat_map(|l| {
            [
                (13, 45, 1000, 2),
                (13, 45, 520, 2),
                (13, 45, 300, 2),
                (7, 100, 20, 2),
                (30, 17, 9, 1),
            ]
            .iter()
            .map(move |s| (*l, s))
        }) {
            let (x, w, b) = (values(m * k, 9), values(n * k, 10), values(n, 11));
            let packed = PackedWeight::pack_for(&w, n, k, level);
            let mut plain = vec![0f32; m * n];
            packed.matmul(&x, m, Some(&b), &mut plain, threads);
            let mut fused = vec![0f32; m * n];
            let square_plus_one = |xs: &mut [f32]| xs.iter_mut().for_each(|v| *v = *v * *v + 1.0);
            packed.matmul_then(
                &x,
                m,
                Some(&b),
                &mut fused,
                threads,
                Some(Epilogue::Map(&square_plus_one)),
            );
            square_plus_one(&mut plain);
            assert_eq!(fused, plain, "{level:?} {m}x{n}x{k}");
        }
    }

    #[test]
    fn gelu_in_the_kernel_gives_the_in_place_gelus_bits() {
        // Every kernel applies GELU to its registers on the last pass and must give exactly
        // what the product followed by `gelu_erf_in_place` gives: tiles of every row count
        // (1-6 or 1-12, and the shared last tiles), partial panels, one and several passes,
        // row blocks and column splits, outputs from far below -4 to far above 4 (the erf's
        // clamp) so that both of GELU's tails and its middle are hit.
        let levels = levels("gelu_in_the_kernel_gives_the_in_place_gelus_bits");
        for (level, &(m, n, k, threads)) in levels.iter().flat_map(|l| {
            [
                (13, 45, 1000, 2),
                (37, 17, 300, 2),
                (1, 40, 64, 1),
                (5, 33, 20, 1),
                (250, 48, 96, 2),
                (500, 24, 40, 2),
            ]
            .iter()
            .map(move |s| (*l, s))
        }) {
            let x: Vec<f32> = values(m * k, 12).iter().map(|v| v * 4.0).collect();
            let (w, b) = (values(n * k, 13), values(n, 14));
            let packed = PackedWeight::pack_for(&w, n, k, level);
            for bias in [None, Some(&b[..])] {
                let mut want = vec![0f32; m * n];
                packed.matmul(&x, m, bias, &mut want, threads);
                gelu_reference(&mut want, &format!("{m}x{n}x{k}"));
                let mut got = vec![f32::NAN; m * n];
                packed.matmul_then(&x, m, bias, &mut got, threads, Some(Epilogue::GeluErf));
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{level:?} {m}x{n}x{k} bias={}",
                    bias.is_some()
                );
            }
        }
    }

    #[test]
    fn unpack_returns_the_weight() {
        let w = values(37 * 11, 7);
        assert_eq!(PackedWeight::pack(&w, 37, 11).unpack(), w);
    }

    #[test]
    #[should_panic(expected = "input is not 2 x 4")]
    fn wrong_input_size_is_refused() {
        let packed = PackedWeight::pack(&values(12, 8), 3, 4);
        packed.matmul(&[0.0; 7], 2, None, &mut [0.0; 6], 1);
    }
}
