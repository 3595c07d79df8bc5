//! candle custom ops around the kernels: the fast exact GELU, rounding to Q8_0 blocks, a
//! packed weight as a linear-layer op and the masked mean of a sentence encoder's pooling,
//! with the helpers they share (a contiguous f32 input, an element-wise map over the kernels'
//! pool).

use candle_core::{DType, Result, Tensor};

use super::qgemm::round_to_q8_0;
use super::sgemm::{Epilogue, PackedGemm};

/// Exact-GELU `x/2 (1 + erf(x/sqrt 2))` on the CPU with a branch-free rational erf (Eigen's
/// `generic_fast_erf_float`: odd degree-13 over even degree-8 polynomial, clamped to
/// [-4, 4], error about 1e-7), which the compiler vectorises, split over the cores. candle's
/// `gelu_erf` evaluates a scalar erf on one thread: about 9% of a BERT-base forward (issue 6).
/// Parity tests hold it to transformers' exact GELU within 1e-4 at the outputs.
pub struct FastGeluErf;

fn gelu_erf_slice(src: &[f32], dst: &mut [f32]) {
    dst.copy_from_slice(src);
    gelu_erf_in_place(dst);
}

/// `gelu_erf_slice` in place: the epilogue of the packed GEMM, on output rows still in L1.
///
/// Where the CPU has AVX2 the same loop is compiled for it: eight lanes instead of the
/// baseline's four (SSE2), same operations in the same order (no FMA contraction), so the
/// same bits (tested); the SSE2 loop was 2.7% of a BERT-base 8 x 128 pass.
pub fn gelu_erf_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just checked.
        return unsafe { gelu_erf_in_place_avx2(xs) };
    }
    gelu_erf_in_place_baseline(xs)
}

fn gelu_erf_in_place_baseline(xs: &mut [f32]) {
    for x in xs {
        *x = gelu_erf(*x);
    }
}

/// [`gelu_erf_in_place_baseline`] in AVX2 registers, the scalar operations one for one (a
/// multiply then an add, never a fused multiply-add), so the bits are the baseline's. Written
/// out rather than left to the compiler: the epilogue calls it on short stretches, where the
/// compiler's loop (built for long slices) spent most of its time outside its vector body.
///
/// Four vectors (32 values) go through each step together: one vector's erf is a chain of
/// ~25 dependent operations (~64 cycles), and taken one vector after another the chains'
/// waiting operations filled the FP scheduler, so that only about two vectors were ever in
/// flight (~29 cycles a vector where the multiply ports allow ~8). Interleaved, the oldest
/// operations are the ready ones.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_erf_in_place_avx2(xs: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut quads = xs.chunks_exact_mut(32);
    for q in &mut quads {
        let p = q.as_mut_ptr();
        let v = [0, 8, 16, 24].map(|i| _mm256_loadu_ps(p.add(i)));
        let y = gelu_erf_vectors(v);
        for (i, y) in y.into_iter().enumerate() {
            _mm256_storeu_ps(p.add(8 * i), y);
        }
    }
    let mut singles = quads.into_remainder().chunks_exact_mut(8);
    for c in &mut singles {
        let [y] = gelu_erf_vectors([_mm256_loadu_ps(c.as_ptr())]);
        _mm256_storeu_ps(c.as_mut_ptr(), y);
    }
    for x in singles.into_remainder() {
        *x = gelu_erf(*x);
    }
}

/// The operations [`gelu_erf_vectors`] and the attention heads' tiles need from a register
/// of f32 lanes, so that one body serves the AVX2 (`__m256`) and AVX-512 (`__m512`) kernels.
/// Each method is one instruction, always inlined, so it is compiled for the features of the
/// kernel it lands in.
///
/// # Safety
/// The methods may be called only where the CPU has the register's features (AVX, and FMA
/// for [`F32Lanes::mul_add`], for `__m256`; AVX-512F for `__m512`); `load` and `store` need
/// `LANES` valid values at the pointer.
#[cfg(target_arch = "x86_64")]
pub(super) trait F32Lanes: Copy {
    /// Values a register holds.
    const LANES: usize;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `self · b + c` per lane, rounded once (`vfmadd`).
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    unsafe fn div(self, o: Self) -> Self;
    /// `min(self, o)` per lane, `o` when either is NaN (`vminps`).
    unsafe fn min(self, o: Self) -> Self;
    /// `max(self, o)` per lane, `o` when either is NaN (`vmaxps`).
    unsafe fn max(self, o: Self) -> Self;
}

#[cfg(target_arch = "x86_64")]
macro_rules! f32_lanes {
    (
        $t:ty,
        $lanes:literal,
        $loadu:ident,
        $storeu:ident,
        $fmadd:ident,
        $set1:ident,
        $add:ident,
        $mul:ident,
        $div:ident,
        $min:ident,
        $max:ident
    ) => {
        impl F32Lanes for $t {
            const LANES: usize = $lanes;
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self {
                std::arch::x86_64::$loadu(p)
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut f32) {
                std::arch::x86_64::$storeu(p, self)
            }
            #[inline(always)]
            unsafe fn mul_add(self, b: Self, c: Self) -> Self {
                std::arch::x86_64::$fmadd(self, b, c)
            }
            #[inline(always)]
            unsafe fn splat(v: f32) -> Self {
                std::arch::x86_64::$set1(v)
            }
            #[inline(always)]
            unsafe fn add(self, o: Self) -> Self {
                std::arch::x86_64::$add(self, o)
            }
            #[inline(always)]
            unsafe fn mul(self, o: Self) -> Self {
                std::arch::x86_64::$mul(self, o)
            }
            #[inline(always)]
            unsafe fn div(self, o: Self) -> Self {
                std::arch::x86_64::$div(self, o)
            }
            #[inline(always)]
            unsafe fn min(self, o: Self) -> Self {
                std::arch::x86_64::$min(self, o)
            }
            #[inline(always)]
            unsafe fn max(self, o: Self) -> Self {
                std::arch::x86_64::$max(self, o)
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
f32_lanes!(
    std::arch::x86_64::__m256,
    8,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_fmadd_ps,
    _mm256_set1_ps,
    _mm256_add_ps,
    _mm256_mul_ps,
    _mm256_div_ps,
    _mm256_min_ps,
    _mm256_max_ps
);
#[cfg(target_arch = "x86_64")]
f32_lanes!(
    std::arch::x86_64::__m512,
    16,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_set1_ps,
    _mm512_add_ps,
    _mm512_mul_ps,
    _mm512_div_ps,
    _mm512_min_ps,
    _mm512_max_ps
);

/// [`gelu_erf`] of `W` vectors, each step applied to all of them before the next: the scalar
/// operations one for one (a multiply then an add, never fused), so every lane gets
/// [`gelu_erf`]'s bits at any register width.
///
/// # Safety
/// The CPU must have the features of `V` (see [`F32Lanes`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn gelu_erf_vectors<V: F32Lanes, const W: usize>(v: [V; W]) -> [V; W] {
    let mut x = v;
    for x in &mut x {
        // `clamp` keeps a NaN, as `max` and `min` do with the NaN as their second operand.
        let s = x.mul(V::splat(std::f32::consts::FRAC_1_SQRT_2));
        *x = V::splat(4.0).min(V::splat(-4.0).max(s));
    }
    let mut x2 = x;
    for x2 in &mut x2 {
        *x2 = x2.mul(*x2);
    }
    let mut p = [V::splat(GELU_A[0]); W];
    for a in &GELU_A[1..] {
        for (p, x2) in p.iter_mut().zip(&x2) {
            *p = p.mul(*x2).add(V::splat(*a));
        }
    }
    let mut q = [V::splat(GELU_B[0]); W];
    for b in &GELU_B[1..] {
        for (q, x2) in q.iter_mut().zip(&x2) {
            *q = q.mul(*x2).add(V::splat(*b));
        }
    }
    let mut y = v;
    for i in 0..W {
        let erf = x[i].mul(p[i]).div(q[i]);
        let half_v = V::splat(0.5).mul(v[i]);
        y[i] = half_v.mul(V::splat(1.0).add(erf));
    }
    y
}

/// GELU on a ymm kernel's accumulators (`R` rows of two registers) through
/// [`gelu_on_registers`] (two rows, four registers, at a time): the same operations on each
/// value as the in-place GELU, so the same bits, without storing the tile, reading it back
/// (which stalled on the stores: 4.4% of MiniLM 32 x 32 in the gathering copy) and storing
/// it again. Lanes past a tile's width are computed and dropped.
///
/// Out of line, the tile passed and returned by value (stored and reloaded once a tile):
/// inlined into the kernel, in any form tried (one flat slice, rows, pairs of rows), the
/// compiler stored every accumulator to memory on every step of the kernel's loop (AVX2
/// f32 kernel at 55-60% of its speed; session 21).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn gelu_on_ymm_tile<const R: usize>(
    mut acc: [[std::arch::x86_64::__m256; 2]; R],
) -> [[std::arch::x86_64::__m256; 2]; R] {
    gelu_on_registers(acc.as_flattened_mut());
    acc
}

/// GELU on any number of registers (a kernel's tile, handed out of line by
/// [`gelu_on_ymm_tile`] or [`gelu_on_zmm_tile`]), four at a time with their dependency chains
/// interleaved (see [`gelu_erf_in_place_avx2`]), then what is left.
///
/// # Safety
/// The CPU must have the features of `V`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn gelu_on_registers<V: F32Lanes>(acc: &mut [V]) {
    let mut quads = acc.chunks_exact_mut(4);
    for q in &mut quads {
        let [a, b, c, d] = gelu_erf_vectors([q[0], q[1], q[2], q[3]]);
        q.copy_from_slice(&[a, b, c, d]);
    }
    match quads.into_remainder() {
        [a, b, c] => [*a, *b, *c] = gelu_erf_vectors([*a, *b, *c]),
        [a, b] => [*a, *b] = gelu_erf_vectors([*a, *b]),
        [a] => [*a] = gelu_erf_vectors([*a]),
        _ => {}
    }
}

/// [`gelu_on_registers`] for an AVX-512 kernel's tile of `R` rows by `P` zmm registers, out
/// of line as [`gelu_on_ymm_tile`] (inlined, the f32 kernel ran at a third of its speed).
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn gelu_on_zmm_tile<const R: usize, const P: usize>(
    mut acc: [[std::arch::x86_64::__m512; P]; R],
) -> [[std::arch::x86_64::__m512; P]; R] {
    gelu_on_registers(acc.as_flattened_mut());
    acc
}

/// The numerator and denominator of [`gelu_erf`]'s rational erf, highest power first.
const GELU_A: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_6e-3,
    -1.609_603_3e-2,
];
const GELU_B: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_6e-4,
    -1.682_827e-3,
    -7.373_329e-3,
    -1.426_474e-2,
];

#[inline(always)]
fn gelu_erf(v: f32) -> f32 {
    let x = (v * std::f32::consts::FRAC_1_SQRT_2).clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = GELU_A[0];
    for a in &GELU_A[1..] {
        p = p * x2 + a;
    }
    let mut q = GELU_B[0];
    for b in &GELU_B[1..] {
        q = q * x2 + b;
    }
    0.5 * v * (1.0 + x * p / q)
}

impl candle_core::CustomOp1 for FastGeluErf {
    fn name(&self) -> &'static str {
        "fast-gelu-erf"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        // Chunks of 32K values: a small tensor is one chunk, on one thread.
        map_chunks_parallel(storage, layout, self.name(), 1 << 15, gelu_erf_slice)
    }
}

/// The f32 values of a custom op's contiguous input (the ops here are applied to
/// `.contiguous()` tensors; anything else is refused, naming the op).
pub(super) fn contiguous_f32<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> Result<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&storage.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("{op} needs a contiguous f32 input"),
    }
}

/// An element-wise custom op on the CPU: `f` maps each `chunk`-long stretch of the contiguous
/// f32 input to the same stretch of a new output of the same shape, stretches spread over
/// the kernels' pool.
pub(super) fn map_chunks_parallel(
    storage: &candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
    chunk: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
    let src = contiguous_f32(storage, layout, op)?;
    let mut dst = vec![0f32; src.len()];
    super::pool::for_each_chunk_mut(&mut dst, chunk, |i, d| {
        f(&src[i * chunk..i * chunk + d.len()], d)
    });
    Ok((candle_core::CpuStorage::F32(dst), layout.shape().clone()))
}

/// Round f32 values (rows a multiple of 32 wide) to what Q8_0 blocks hold, exactly as
/// candle's `BlockQ8_0::from_float` then `to_float` do (`d = amax / 127` stored as f16,
/// `q = round(x / d)`, value `q * d`), in one pass over the kernels' pool instead of candle's
/// single-threaded quantize into blocks and dequantize out of them.
pub(crate) struct RoundToQ8_0;

impl candle_core::CustomOp1 for RoundToQ8_0 {
    fn name(&self) -> &'static str {
        "round-to-q8_0"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        if !layout.shape().elem_count().is_multiple_of(32) {
            candle_core::bail!("round-to-q8_0 needs whole 32-value blocks");
        }
        // 64 blocks per chunk; chunk edges fall on block edges.
        map_chunks_parallel(storage, layout, self.name(), 32 * 64, |src, dst| {
            let (mut q, mut d) = ([0i16; 32 * 64], [0f32; 64]);
            let (q, d) = (&mut q[..src.len()], &mut d[..src.len() / 32]);
            round_to_q8_0(src, q, d);
            for ((dst, q), &scale) in dst
                .chunks_exact_mut(32)
                .zip(q.chunks_exact(32))
                .zip(d.iter())
            {
                for (v, &q) in dst.iter_mut().zip(q) {
                    *v = q as f32 * scale;
                }
            }
        })
    }
}

/// `x Wᵀ + bias` through one of the packed GEMMs, then `epilogue` on the outputs.
pub(crate) fn run_packed(
    weight: &dyn PackedGemm,
    bias: Option<&[f32]>,
    x: &Tensor,
    epilogue: Option<Epilogue>,
) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        candle_core::bail!(
            "a packed linear layer takes f32 inputs on the CPU, got {:?} on {:?}",
            x.dtype(),
            x.device()
        );
    }
    x.contiguous()?.apply_op1_no_bwd(&PackedLinear {
        weight,
        bias,
        epilogue,
    })
}

/// A packed weight and its bias as a candle op on `(.., k)` inputs.
struct PackedLinear<'a> {
    weight: &'a dyn PackedGemm,
    bias: Option<&'a [f32]>,
    /// Applied to the finished outputs (an activation).
    epilogue: Option<Epilogue<'a>>,
}

impl candle_core::CustomOp1 for PackedLinear<'_> {
    fn name(&self) -> &'static str {
        "packed-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let (n, k) = (self.weight.n(), self.weight.k());
        let dims = layout.shape().dims();
        if dims.last() != Some(&k) {
            candle_core::bail!("linear layer expects inputs of width {k}, got shape {dims:?}");
        }
        let m = x.len() / k.max(1);
        let mut out = Vec::with_capacity(m * n);
        self.weight.matmul_then_uninit(
            x,
            m,
            self.bias,
            &mut out.spare_capacity_mut()[..m * n],
            super::pool::threads(),
            self.epilogue,
        );
        // SAFETY: `matmul_then_uninit` writes every one of the m x n outputs.
        unsafe { out.set_len(m * n) };
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from(shape),
        ))
    }
}

/// Mean pooling: `hidden (batch, seq, h)` averaged over the positions whose `mask (batch,
/// seq)` is 1, giving `(batch, h)`: `hidden.apply_op2_no_bwd(&mask, &MaskedMean)`, both
/// contiguous f32 (the mask 0 or 1).
///
/// candle's form of it (`(hidden * mask).sum(1) / mask.sum(1)`) is a broadcast multiply, a
/// strided sum over the middle dimension one value at a time and a divide, all on the calling
/// thread: 1% of a batch-32 pass of paraphrase-MiniLM-L3-v2 on STS-B, with the pool's other
/// thread idle meanwhile (issue 16). Here each sentence is one job on the kernels' pool, its
/// rows added where the mask is 1. The sums are candle's bit for bit (tested): both start
/// from 0 and add positions in order, and a masked position adds `0 · x`, which leaves a sum
/// that started at +0 unchanged; only a masked position holding an infinity or NaN differs
/// (candle's sum turns NaN, this one ignores it). The divisor is the count of ones, at least
/// 1e-9 as in sentence-transformers.
pub struct MaskedMean;

impl MaskedMean {
    fn run(hidden: &[f32], mask: &[f32], batch: usize, seq: usize, h: usize) -> Vec<f32> {
        let mut out = vec![0f32; batch * h];
        if h == 0 {
            return out;
        }
        super::pool::for_each_chunk_mut(&mut out, h, |b, sum| {
            let mut count = 0f32;
            for (s, &m) in mask[b * seq..(b + 1) * seq].iter().enumerate() {
                if m != 0.0 {
                    let row = &hidden[(b * seq + s) * h..(b * seq + s + 1) * h];
                    for (acc, &v) in sum.iter_mut().zip(row) {
                        *acc += v * m;
                    }
                }
                count += m;
            }
            let count = count.max(1e-9);
            for v in sum.iter_mut() {
                *v /= count;
            }
        });
        out
    }
}

impl candle_core::CustomOp2 for MaskedMean {
    fn name(&self) -> &'static str {
        "masked-mean"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (&[batch, seq, h], &[mb, ms]) = (l1.dims(), l2.dims()) else {
            candle_core::bail!(
                "masked-mean: hidden {:?} is not (batch, seq, h) or mask {:?} not (batch, seq)",
                l1.dims(),
                l2.dims()
            )
        };
        if (mb, ms) != (batch, seq) {
            candle_core::bail!(
                "masked-mean: mask {:?} does not match hidden {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        let hidden = contiguous_f32(s1, l1, self.name())?;
        let mask = contiguous_f32(s2, l2, self.name())?;
        let out = Self::run(hidden, mask, batch, seq, h);
        Ok((candle_core::CpuStorage::F32(out), (batch, h).into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bits;
    use crate::models::linear::tests::matrix;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::Device;

    #[test]
    fn rounding_to_q8_0_matches_candles_quantize_then_dequantize_bit_for_bit() {
        // Values over several magnitudes, a block of zeros (scale 0) and exact halves.
        let mut x = (matrix(6, 128, 21) * 7.5).unwrap();
        x = x
            .slice_assign(
                &[0..1, 0..32],
                &Tensor::zeros((1, 32), DType::F32, &Device::Cpu).unwrap(),
            )
            .unwrap();
        let halves: Vec<f32> = (0..32).map(|i| i as f32 - 15.5).collect();
        x = x
            .slice_assign(
                &[1..2, 32..64],
                &Tensor::from_vec(halves, (1, 32), &Device::Cpu).unwrap(),
            )
            .unwrap();
        let want = QTensor::quantize(&x, GgmlDType::Q8_0)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let got = x.apply_op1_no_bwd(&RoundToQ8_0).unwrap();
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn gelu_gives_the_baseline_loops_bits_and_matches_erf() {
        // Both tails of the clamp, zero, and values over the range that matters; nine extra
        // values leave a tail past the last multiple of 8.
        let mut xs: Vec<f32> = (-4000..4000).map(|i| i as f32 / 400.0).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-30,
            -7.5,
            9.0,
            f32::MIN_POSITIVE,
            3.3e3,
            -3.3e3,
            0.3,
        ]);
        // Stretches of four vectors, then up to three single vectors, then a scalar tail: a
        // value gets the same bits whichever of the three takes it.
        for start in [0, 8, 16, 24, 5] {
            for len in [0, 3, 8, 16, 31, 32, 40, 56, 64, 77] {
                let part = &xs[3000 + start..3000 + start + len];
                let mut got = part.to_vec();
                gelu_erf_in_place(&mut got);
                let mut want = part.to_vec();
                gelu_erf_in_place_baseline(&mut want);
                assert_eq!(bits(&got), bits(&want), "{len} values from {start}");
            }
        }
        let mut got = xs.clone();
        gelu_erf_in_place(&mut got);
        let mut want = xs.clone();
        gelu_erf_in_place_baseline(&mut want);
        assert_eq!(bits(&got), bits(&want));
        // Against GELU from f64's erf (libm), at the rational approximation's accuracy.
        // (Past |x| = 6 the series below loses its digits; GELU is x or 0 there, to the clamp's error.)
        for (&x, &g) in xs.iter().zip(&got).filter(|(x, _)| x.abs() < 6.0) {
            let want = 0.5 * x as f64 * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2));
            assert!(
                (g as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "gelu({x}) = {g}, want {want}"
            );
        }
        for (&x, &g) in xs
            .iter()
            .zip(&got)
            .filter(|(x, _)| x.abs() >= 6.0 && x.is_finite())
        {
            let want = x.max(0.0);
            // The clamped erf leaves about 6e-8 of 1 - |erf|: an error that grows with |x|.
            let tol = 1e-5 + 1e-7 * x.abs();
            assert!((g - want).abs() <= tol, "gelu({x}) = {g}, want {want}");
        }
    }

    /// erf by its Taylor series: to about 1e-8 for |x| < 4.3 (terms up to e^(x^2) cancel).
    fn erf(x: f64) -> f64 {
        let (mut sum, mut term, x2) = (x, x, x * x);
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
