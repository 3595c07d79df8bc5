//! Fused multi-head self-attention on the CPU (f32): one candle op per layer.

#[cfg(target_arch = "x86_64")]
use super::ops::F32Lanes;
use candle_core::Result;

/// `dst (m x n) = beta * lhs (m x k) · rhs (k x n)` on the calling thread, over strided
/// operands whose rows have unit column stride in `dst` and `lhs` (`rhs` is addressed by both
/// strides, so a row-major `(n x k)` matrix is read transposed): the per-head products of the
/// fused attention kernels.
///
/// # Safety
/// Every element addressed by the sizes and strides must lie inside its allocation, and
/// `dst`'s elements must not be written by anyone else during the call.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn strided_gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_cs: usize,
    rhs_rs: usize,
    beta: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        1,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        0.0,
        beta,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

thread_local! {
    /// Each thread's buffer for one head's scores, kept for its next job.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `f` on this thread's score buffer, `len` long ([`super::pool::with_scratch`]).
pub(super) fn with_scores<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    super::pool::with_scratch(&SCORES, len, f)
}

/// `row = softmax(row + bias)` in place: the attention probabilities of one query over its
/// keys, `bias` holding 0 for a key and a large negative value (`f32::MIN`) for padding.
///
/// With AVX2 and FMA the exponentials are [`exp_avx2`]'s (within 2 ulp of the exact value; a
/// scalar libm `expf` per score was 4% of a BERT-base 1 x 128 pass) and the sum is kept in
/// eight lanes, element `i` in lane `i mod 8`, the last partial vector filled with padding.
/// A row thus gets the same bits whatever padding follows it (padding adds exact zeros to
/// the same lanes), so a sentence scores the same in any batch.
pub(super) fn softmax_with_bias(row: &mut [f32], bias: &[f32]) {
    assert_eq!(row.len(), bias.len(), "scores and mask differ in length");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the features were just checked.
        return unsafe { softmax_with_bias_avx2(row, bias) };
    }
    let mut max = f32::NEG_INFINITY;
    for (x, &m) in row.iter_mut().zip(bias) {
        *x += m;
        max = max.max(*x);
    }
    let mut sum = 0f32;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// [`softmax_with_bias`] in AVX2 registers.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `bias` is as long as `row`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_with_bias_avx2(row: &mut [f32], bias: &[f32]) {
    use std::arch::x86_64::*;
    let n = row.len();
    let full = n / 8 * 8;
    let (r, b) = (row.as_mut_ptr(), bias.as_ptr());
    // The values past the last multiple of 8, padded with -inf (whose exponential is 0).
    let mut tail = [f32::NEG_INFINITY; 8];
    for j in full..n {
        tail[j - full] = row[j] + bias[j];
    }
    let mut vmax = _mm256_loadu_ps(tail.as_ptr());
    for i in (0..full).step_by(8) {
        let v = _mm256_add_ps(_mm256_loadu_ps(r.add(i)), _mm256_loadu_ps(b.add(i)));
        _mm256_storeu_ps(r.add(i), v);
        vmax = _mm256_max_ps(vmax, v);
    }
    let max = _mm256_set1_ps(horizontal(vmax, f32::max));
    let mut vsum = _mm256_setzero_ps();
    for i in (0..full).step_by(8) {
        let e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(r.add(i)), max));
        _mm256_storeu_ps(r.add(i), e);
        vsum = _mm256_add_ps(vsum, e);
    }
    let e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(tail.as_ptr()), max));
    _mm256_storeu_ps(tail.as_mut_ptr(), e);
    vsum = _mm256_add_ps(vsum, e);
    let inv = 1.0 / horizontal(vsum, |a, b| a + b);
    let vinv = _mm256_set1_ps(inv);
    for i in (0..full).step_by(8) {
        _mm256_storeu_ps(r.add(i), _mm256_mul_ps(_mm256_loadu_ps(r.add(i)), vinv));
    }
    for j in full..n {
        row[j] = tail[j - full] * inv;
    }
}

/// The eight lanes of `v` folded with `f` in lane order (a fixed order, so a fixed result).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn horizontal(v: std::arch::x86_64::__m256, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    std::arch::x86_64::_mm256_storeu_ps(lanes.as_mut_ptr(), v);
    lanes[1..].iter().fold(lanes[0], |acc, &x| f(acc, x))
}

/// `e^x` for eight values: Cephes' `expf` (`x = n ln 2 + r`, `|r| <= ln 2 / 2`, a degree-5
/// polynomial for `(e^r - 1 - r) / r^2`, then `2^n` put into the exponent), as in
/// `avx_mathfun` and MLAS; within 2 ulp of the exact value. Below -87.3 (where `e^x` is no
/// longer a normal float) it gives 0, also for `-inf`; above 88 it gives `e^88`.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp_avx2(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    const LOWEST: f32 = -87.336_55; // ln of the smallest normal float
    let underflow = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LOWEST));
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(LOWEST)),
        _mm256_set1_ps(88.0),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    // ln 2 in two parts, so that n * LN2_HI is exact.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let p = _mm256_add_ps(
        _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
        _mm256_set1_ps(1.0),
    );
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    )));
    _mm256_andnot_ps(underflow, _mm256_mul_ps(p, scale))
}

/// Longest sequence whose heads take [`head_avx2`]; longer ones go to the `gemm` crate, whose
/// packed kernels are faster there (BERT-base at 128 tokens: 3.5% of a pass against 2.8%),
/// and which from 17 rows on gives [`head_avx2`]'s bits, so a sentence's outputs do not
/// depend on which side of this length its batch falls (tested up to 128).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const MAX_AVX2_HEAD_LEN: usize = 32;

/// Which code computes a head ([`FusedAttention`]), chosen once per call from the CPU's
/// features and the head's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum HeadKernel {
    /// [`head_avx512`]: every length, head widths that are multiples of 16.
    Avx512,
    /// [`head_avx2`]: heads of 32 or 64 values, up to [`MAX_AVX2_HEAD_LEN`] tokens.
    Avx2,
    /// [`head_gemm`]: anything else.
    Gemm,
}

impl HeadKernel {
    fn for_head(s: usize, d: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma");
            // The f32 GEMM's level, so that `HARNESS_KERNELS=avx2` holds the heads too.
            let avx512 = super::isa::f32_level() == Some(super::isa::F32Level::Avx512);
            if avx512 && d.is_multiple_of(16) {
                return HeadKernel::Avx512;
            }
            if avx2 && matches!(d, 32 | 64) && s <= MAX_AVX2_HEAD_LEN {
                return HeadKernel::Avx2;
            }
        }
        let _ = (s, d);
        HeadKernel::Gemm
    }

    /// Floats of scratch one head needs.
    fn scratch(self, s: usize, d: usize) -> usize {
        let padded = |to: usize| s.next_multiple_of(to);
        match self {
            HeadKernel::Avx512 => (d + s) * padded(16),
            HeadKernel::Avx2 => (d + s) * padded(8),
            HeadKernel::Gemm => s * s,
        }
    }

    /// Compute one head.
    ///
    /// # Safety
    /// `self` came from [`HeadKernel::for_head`] for this head's shape (so the CPU has its
    /// features); `scratch` holds [`HeadKernel::scratch`] floats; as [`head_avx2`] otherwise.
    unsafe fn run(self, hd: &Head, bias: &[f32], scratch: &mut [f32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            HeadKernel::Avx512 => head_avx512(hd, bias, scratch),
            #[cfg(target_arch = "x86_64")]
            HeadKernel::Avx2 => head_avx2(hd, bias, scratch),
            _ => head_gemm(hd, bias, scratch),
        }
    }
}

/// One (sequence, head) of [`FusedAttention`]: `s` queries, keys and values of `d` values
/// each, rows `ld` apart; the context goes to `dst`, rows `ldd` apart.
struct Head {
    s: usize,
    d: usize,
    ld: usize,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    dst: *mut f32,
    ldd: usize,
    scale: f32,
}

/// One head's attention on the `gemm` crate; `scratch` holds `s x s` scores.
///
/// # Safety
/// As [`head_avx2`], without the CPU features.
unsafe fn head_gemm(hd: &Head, bias: &[f32], scores: &mut [f32]) {
    let (s, d, ld) = (hd.s, hd.d, hd.ld);
    let scores = &mut scores[..s * s];
    // scores = scale * q k^T: (s x d) by (d x s).
    strided_gemm(
        s,
        s,
        d,
        scores.as_mut_ptr(),
        s,
        hd.q,
        ld,
        hd.k,
        ld,
        1,
        hd.scale,
    );
    for row in scores.chunks_mut(s) {
        softmax_with_bias(row, bias);
    }
    // context = probs v: (s x s) by (s x d), into the head's columns.
    strided_gemm(
        s,
        d,
        s,
        hd.dst,
        hd.ldd,
        scores.as_ptr(),
        s,
        hd.v,
        1,
        ld,
        1.0,
    );
}

/// `f::<R>(args)` for the `rows` queries left of a block of `max`: `R` is `rows` when it is
/// one of the listed counts (those below `max`), else `max`.
#[cfg(target_arch = "x86_64")]
macro_rules! up_to_rows {
    ($rows:expr, [$($n:literal),*] else $max:literal, $f:ident::<$v:ty> $args:tt) => {
        match $rows {
            $($n => $f::<$v, $n> $args,)*
            _ => $f::<$v, $max> $args,
        }
    };
}

/// One head's attention in AVX2 registers, the two products as the `gemm` crate's general
/// kernels compute them (each output one FMA per term in order from zero, then times the
/// scale: its bits from 17 rows on; under 17 its small-matrix path sums in another order, so
/// a short sentence's outputs move by float rounding), without its per-call set-up, which at
/// these sizes (a 32 x 32 x 32 product for a MiniLM head on an STS-B sentence) was most of
/// the products' time. A sentence's outputs do not depend on the padding after it (tested),
/// which the small-matrix path did not give: `scores = scale q kᵀ` over a transposed
/// copy of the keys (4 queries by 16 keys a step), the softmax, then `context = p v` (4
/// queries by 16 values a step). `scratch` holds `d x s8` for the keys and
/// `s x s8` for the scores (`s8`: `s` rounded up to 8, zeros past `s`).
///
/// # Safety
/// The CPU must have AVX2 and FMA; `d` is 32 or 64; `bias` holds `s` values; the head's rows
/// must lie in their allocations and `dst`'s rows be written by nobody else.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn head_avx2(hd: &Head, bias: &[f32], scratch: &mut [f32]) {
    use std::arch::x86_64::__m256;
    let (s, d) = (hd.s, hd.d);
    let s8 = s.next_multiple_of(8);
    let (kt, scores) = scratch.split_at_mut(d * s8);
    transpose_keys(hd, kt, s8);
    // Key blocks outside, query blocks inside: a block's 16 keys (d x 64 bytes of `kt`) stay
    // in L1 while every query passes.
    let mut j0 = 0;
    while j0 < s8 {
        let keys = if j0 + 16 <= s8 { 16 } else { 8 };
        let mut i0 = 0;
        while i0 < s {
            up_to_rows!(s - i0, [1, 2, 3] else 4, scores_tile::<__m256>(hd, i0, j0, keys, kt, scores));
            i0 += 4;
        }
        j0 += keys;
    }
    for row in scores.chunks_exact_mut(s8) {
        // The features are this function's own; no need to ask again for every row.
        softmax_with_bias_avx2(&mut row[..s], bias);
    }
    // 16 context columns of 4 queries a step: each value row read serves four queries.
    for c0 in (0..d).step_by(16) {
        let mut i0 = 0;
        while i0 < s {
            up_to_rows!(s - i0, [1, 2, 3] else 4, context_tile::<__m256>(hd, i0, c0, 16, scores));
            i0 += 4;
        }
    }
}

/// The head's keys transposed 8 x 8 at a time into `kt`, rows `stride` long (a multiple of 8
/// and at least `s`): `kt[c][j] = k[j][c]`, zeros for `j` past `s`.
///
/// # Safety
/// The CPU must have AVX2; `d` is a multiple of 8; `kt` holds `d x stride` values; the head's
/// key rows lie in their allocation.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn transpose_keys(hd: &Head, kt: &mut [f32], stride: usize) {
    use std::arch::x86_64::*;
    debug_assert!(stride.is_multiple_of(8) && stride >= hd.s && kt.len() >= hd.d * stride);
    for j0 in (0..stride).step_by(8) {
        for c0 in (0..hd.d).step_by(8) {
            let rows = std::array::from_fn(|i| {
                if j0 + i < hd.s {
                    _mm256_loadu_ps(hd.k.add((j0 + i) * hd.ld + c0))
                } else {
                    _mm256_setzero_ps()
                }
            });
            for (c, col) in super::sgemm::transpose8(rows).into_iter().enumerate() {
                _mm256_storeu_ps(kt.as_mut_ptr().add((c0 + c) * stride + j0), col);
            }
        }
    }
}

/// Scores of queries `i0..i0 + R` against keys `j0..j0 + keys` (two registers of keys, or
/// one for the last odd group): `scores[i][j] = scale * Σ_c q[i][c] kt[c][j]`, one FMA per
/// `c` in order from zero, then the scale. `kt` and `scores` have rows of `s` rounded up to
/// the register's lanes. One body for both heads, so that both give the same bits.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn scores_tile<V: F32Lanes, const R: usize>(
    hd: &Head,
    i0: usize,
    j0: usize,
    keys: usize,
    kt: &[f32],
    scores: &mut [f32],
) {
    let stride = hd.s.next_multiple_of(V::LANES);
    let scale = V::splat(hd.scale);
    let two = keys == 2 * V::LANES;
    let mut acc = [[V::splat(0.0); 2]; R];
    for c in 0..hd.d {
        let kp = kt.as_ptr().add(c * stride + j0);
        let k0 = V::load(kp);
        let k1 = if two { V::load(kp.add(V::LANES)) } else { k0 };
        for (i, a) in acc.iter_mut().enumerate() {
            let qv = V::splat(*hd.q.add((i0 + i) * hd.ld + c));
            a[0] = qv.mul_add(k0, a[0]);
            a[1] = qv.mul_add(k1, a[1]);
        }
    }
    for (i, a) in acc.iter().enumerate() {
        let row = scores.as_mut_ptr().add((i0 + i) * stride + j0);
        a[0].mul(scale).store(row);
        if two {
            a[1].mul(scale).store(row.add(V::LANES));
        }
    }
}

/// Context rows `i0..i0 + R`, columns `c0..c0 + cols` (two registers, or one for the last
/// odd group): `dst[i][c] = Σ_j p[i][j] v[j][c]`, keys in order. `p` has rows of `s` rounded
/// up to the register's lanes. One body for both heads, as [`scores_tile`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn context_tile<V: F32Lanes, const R: usize>(
    hd: &Head,
    i0: usize,
    c0: usize,
    cols: usize,
    p: &[f32],
) {
    let stride = hd.s.next_multiple_of(V::LANES);
    let two = cols == 2 * V::LANES;
    let mut acc = [[V::splat(0.0); 2]; R];
    for j in 0..hd.s {
        let vrow = hd.v.add(j * hd.ld + c0);
        let v0 = V::load(vrow);
        let v1 = if two { V::load(vrow.add(V::LANES)) } else { v0 };
        for (i, a) in acc.iter_mut().enumerate() {
            let pv = V::splat(*p.as_ptr().add((i0 + i) * stride + j));
            a[0] = pv.mul_add(v0, a[0]);
            a[1] = pv.mul_add(v1, a[1]);
        }
    }
    for (i, a) in acc.iter().enumerate() {
        let out = hd.dst.add((i0 + i) * hd.ldd + c0);
        a[0].store(out);
        if two {
            a[1].store(out.add(V::LANES));
        }
    }
}

/// [`head_avx2`] in zmm registers, for heads of any length: 8 queries by 32 keys a step for
/// the scores, 8 queries by 32 (or 16) context values a step, each output the same FMAs in
/// the same order as there (one per term in order from zero, then the scale), so the same
/// bits as the AVX2 head and the `gemm` crate's general kernels; the softmax is the AVX2
/// one (its sum's lane order is part of its bits). At BERT's 128 tokens the `gemm` crate's
/// AVX2 kernels took 5% of an f32 BERT-base 8 x 128 pass and 10% of a Q8_0 32 x 128 pass
/// (Zen 5). `scratch` holds `d x s16` for the keys and `s x s16` for the scores (`s16`: `s`
/// rounded up to 16, zeros past `s`).
///
/// # Safety
/// The CPU must have AVX-512F; `d` is a multiple of 16; otherwise as [`head_avx2`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn head_avx512(hd: &Head, bias: &[f32], scratch: &mut [f32]) {
    use std::arch::x86_64::__m512;
    let (s, d) = (hd.s, hd.d);
    let s16 = s.next_multiple_of(16);
    let (kt, scores) = scratch.split_at_mut(d * s16);
    transpose_keys(hd, kt, s16);
    // Key blocks outside, query blocks inside, as in the AVX2 head.
    let mut j0 = 0;
    while j0 < s16 {
        let keys = if j0 + 32 <= s16 { 32 } else { 16 };
        let mut i0 = 0;
        while i0 < s {
            up_to_rows!(
                s - i0,
                [1, 2, 3, 4, 5, 6, 7] else 8,
                scores_tile::<__m512>(hd, i0, j0, keys, kt, scores)
            );
            i0 += 8;
        }
        j0 += keys;
    }
    for row in scores.chunks_exact_mut(s16) {
        softmax_with_bias_avx2(&mut row[..s], bias);
    }
    let mut c0 = 0;
    while c0 < d {
        let cols = if c0 + 32 <= d { 32 } else { 16 };
        let mut i0 = 0;
        while i0 < s {
            up_to_rows!(
                s - i0,
                [1, 2, 3, 4, 5, 6, 7] else 8,
                context_tile::<__m512>(hd, i0, c0, cols, scores)
            );
            i0 += 8;
        }
        c0 += cols;
    }
}

/// Scaled dot-product attention for every (sequence, head) pair without reshaping copies:
/// the GEMM reads each head's queries, keys and values straight out of the fused projection
/// through strides, scores stay in a per-head buffer (scale applied by the GEMM, padding bias
/// and softmax in one pass), and each head's context is written into its columns of the
/// output. Heads are spread over the cores with single-threaded GEMMs, instead of
/// multi-threaded GEMMs on matrices too small to share (issue 6).
pub struct FusedAttention {
    pub heads: usize,
}

impl candle_core::CustomOp2 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (Some((a1, b1)), Some((a2, b2))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("fused-attention needs contiguous inputs");
        };
        let qkv = &s1.as_slice::<f32>()?[a1..b1];
        let bias = &s2.as_slice::<f32>()?[a2..b2];
        let (b, s, h3) = l1.shape().dims3()?;
        let h = h3 / 3;
        if self.heads == 0 || h3 % 3 != 0 || h % self.heads != 0 {
            candle_core::bail!(
                "fused-attention: {h3} query/key/value columns do not split into {} heads",
                self.heads
            );
        }
        if bias.len() != b * s {
            candle_core::bail!(
                "fused-attention: a bias of {} values for {b} sequences of {s}",
                bias.len()
            );
        }
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        // Every (sequence, head) writes all of its rows of its `d` columns, and the heads'
        // columns make up `h`, so every value is written (the products do not read it first).
        let mut out = super::unwritten::<f32>(b * s * h);
        let items = b * self.heads;
        let out_ptr = out.as_mut_ptr() as usize;
        // One job per (sequence, head), taken in turn by the pool's threads, each with its
        // own score buffer.
        let kernel = HeadKernel::for_head(s, d);
        let scratch = kernel.scratch(s, d);
        super::pool::for_each_job(items, |item| {
            with_scores(scratch, |scores| {
                let (bi, hi) = (item / self.heads, item % self.heads);
                let base = qkv[bi * s * h3..].as_ptr();
                // SAFETY: offsets stay inside this sequence's rows of qkv; every
                // (sequence, head) writes only its own d columns of its s output rows,
                // so no two items write the same element.
                unsafe {
                    let (q, k, v) = (
                        base.add(hi * d),
                        base.add(h + hi * d),
                        base.add(2 * h + hi * d),
                    );
                    let bias = &bias[bi * s..(bi + 1) * s];
                    let dst = (out_ptr as *mut f32).add(bi * s * h + hi * d);
                    let head = Head {
                        s,
                        d,
                        ld: h3,
                        q,
                        k,
                        v,
                        dst,
                        ldd: h,
                        scale,
                    };
                    kernel.run(&head, bias, scores);
                }
            })
        });
        // SAFETY: every value was written, as said where `out` was made.
        let out = unsafe { super::written(out) };
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from((b, s, h)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bits;

    fn avx2() -> bool {
        let has = super::super::isa::F32Level::Avx2.available();
        if !has {
            eprintln!("skipped: this host has no AVX2 + FMA");
        }
        has
    }

    #[cfg(target_arch = "x86_64")]
    fn exp8(x: [f32; 8]) -> [f32; 8] {
        use std::arch::x86_64::*;
        let mut out = [0f32; 8];
        // SAFETY: callers check AVX2 and FMA.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp_avx2(_mm256_loadu_ps(x.as_ptr()))) };
        out
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vector_exp_is_within_two_ulp_over_the_normal_range() {
        if !avx2() {
            return;
        }
        let mut worst = 0f64;
        let xs: Vec<f32> = (0..200_000)
            .map(|i| -87.3 + i as f32 * (87.3 + 88.0) / 200_000.0)
            .collect();
        for chunk in xs.chunks_exact(8) {
            let got = exp8(chunk.try_into().unwrap());
            for (&x, &g) in chunk.iter().zip(&got) {
                let want = (x as f64).exp();
                // One ulp of the exact value, as an f32.
                let ulp = (want as f32).next_up() as f64 - want as f32 as f64;
                worst = worst.max((g as f64 - want).abs() / ulp);
            }
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        // Underflow gives exact zeros; the top of the range stays finite.
        let edge = exp8([
            -87.4,
            -100.0,
            f32::MIN,
            f32::NEG_INFINITY,
            0.0,
            88.0,
            1.0,
            -1.0,
        ]);
        assert_eq!(&edge[..4], &[0.0; 4]);
        assert_eq!(edge[4], 1.0);
        assert!(edge[5].is_finite() && (edge[5] as f64 / 88f64.exp() - 1.0).abs() < 1e-6);
        assert!((edge[6] as f64 - 1f64.exp()).abs() < 1e-6);
    }

    fn reference(row: &[f32], bias: &[f32]) -> Vec<f64> {
        let z: Vec<f64> = row
            .iter()
            .zip(bias)
            .map(|(&x, &b)| x as f64 + b as f64)
            .collect();
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    }

    #[test]
    fn the_op_writes_every_head_of_every_sequence() {
        // Two sequences (the second with two padded keys), three heads of four values: every
        // output against an f64 reference, so a value the op failed to write would show.
        let (b, s, heads, d) = (2, 5, 3, 4);
        let h = heads * d;
        let qkv = crate::kernels::sgemm::test_values(b * s * 3 * h, 31);
        let mut bias = vec![0f32; b * s];
        bias[2 * s - 2..].fill(-1e4);
        let dev = candle_core::Device::Cpu;
        let q = candle_core::Tensor::from_slice(&qkv, (b, s, 3 * h), &dev).unwrap();
        let m = candle_core::Tensor::from_slice(&bias, (b, s), &dev).unwrap();
        let got = q
            .apply_op2_no_bwd(&m, &FusedAttention { heads })
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let at = |bi: usize, t: usize, c: usize| f64::from(qkv[(bi * s + t) * 3 * h + c]);
        for (bi, hi, i) in
            (0..b).flat_map(|bi| (0..heads).flat_map(move |hi| (0..s).map(move |i| (bi, hi, i))))
        {
            let scores: Vec<f64> = (0..s)
                .map(|j| {
                    let dot: f64 = (0..d)
                        .map(|e| at(bi, i, hi * d + e) * at(bi, j, h + hi * d + e))
                        .sum();
                    dot / (d as f64).sqrt() + f64::from(bias[bi * s + j])
                })
                .collect();
            let top = scores.iter().cloned().fold(f64::MIN, f64::max);
            let total: f64 = scores.iter().map(|v| (v - top).exp()).sum();
            for e in 0..d {
                let want: f64 = (0..s)
                    .map(|j| (scores[j] - top).exp() / total * at(bi, j, 2 * h + hi * d + e))
                    .sum();
                let g = got[(bi * s + i) * h + hi * d + e];
                assert!(
                    (f64::from(g) - want).abs() < 1e-5,
                    "seq {bi} head {hi} row {i}: {g} vs {want}"
                );
            }
        }
        // Columns that do not split into the heads, and a bias of the wrong size, are errors.
        let err = q
            .apply_op2_no_bwd(&m, &FusedAttention { heads: 5 })
            .unwrap_err();
        assert!(
            err.to_string().contains("do not split into 5 heads"),
            "{err}"
        );
        let short = candle_core::Tensor::from_slice(&bias[..s], (1, s), &dev).unwrap();
        let err = q
            .apply_op2_no_bwd(&short, &FusedAttention { heads })
            .unwrap_err();
        assert!(err.to_string().contains("a bias of 5 values"), "{err}");
    }

    #[test]
    fn softmax_matches_f64_and_ignores_padding_bit_for_bit() {
        let values = crate::kernels::sgemm::test_values(64, 9);
        for len in [1, 5, 8, 13, 16, 29, 53] {
            let row: Vec<f32> = values[..len].iter().map(|v| v * 8.0).collect();
            let mut got = row.clone();
            softmax_with_bias(&mut got, &vec![0.0; len]);
            for (i, (&g, w)) in got.iter().zip(reference(&row, &vec![0.0; len])).enumerate() {
                assert!(
                    (g as f64 - w).abs() <= 1e-6 * w.max(1e-3),
                    "{len}: {i}: {g} vs {w}"
                );
            }
            // The same row padded to longer lengths, as in a batch with longer sentences.
            for padded in [len + 1, len.next_multiple_of(8) + 8, 64] {
                let mut long = row.clone();
                long.resize(padded, 0.5);
                let mut bias = vec![0.0; len];
                bias.resize(padded, f32::MIN);
                softmax_with_bias(&mut long, &bias);
                assert_eq!(bits(&long[..len]), bits(&got), "{len} padded to {padded}");
                assert!(
                    long[len..].iter().all(|&p| p == 0.0),
                    "{len} padded to {padded}"
                );
            }
        }
    }

    /// One head through `kernel`, on `s` rows of a pseudo-random fused projection (`ld`
    /// wide) of which the last `pad` keys are padding.
    fn run_head(
        d: usize,
        s: usize,
        pad: usize,
        qkv: &[f32],
        ld: usize,
        kernel: HeadKernel,
    ) -> Vec<f32> {
        let mut bias = vec![0f32; s];
        bias[s - pad..].fill(f32::MIN);
        let mut out = vec![0f32; s * d];
        let mut scratch = vec![0f32; kernel.scratch(s, d)];
        let head = Head {
            s,
            d,
            ld,
            q: qkv.as_ptr().wrapping_add(1),
            k: qkv.as_ptr().wrapping_add(1 + d),
            v: qkv.as_ptr().wrapping_add(1 + 2 * d),
            dst: out.as_mut_ptr(),
            ldd: d,
            scale: 1.0 / (d as f32).sqrt(),
        };
        assert!(qkv.len() >= s * ld && ld > 1 + 3 * d);
        // SAFETY: callers check the CPU features of `kernel`; every row lies in `qkv` (a
        // row's q, k and v start 1, 1 + d and 1 + 2d in and take d each, inside ld).
        unsafe { kernel.run(&head, &bias, &mut scratch) };
        out
    }

    #[test]
    fn the_avx2_head_matches_the_gemm_crate_and_ignores_padding_bit_for_bit() {
        if !avx2() {
            return;
        }
        // MiniLM's and BERT's head widths; lengths under, at and past multiples of 8 and 16.
        for d in [32, 64] {
            let ld = 3 * d + 5;
            let qkv: Vec<f32> = crate::kernels::sgemm::test_values(140 * ld, d as u64)
                .iter()
                .map(|v| v * 3.0)
                .collect();
            for s in [1, 5, 8, 13, 16, 17, 32, 33, 40, 53, 128] {
                let fast = run_head(d, s, 0, &qkv, ld, HeadKernel::Avx2);
                let want = run_head(d, s, 0, &qkv, ld, HeadKernel::Gemm);
                // The same sums in the same order as the gemm crate's general kernels, which
                // it uses from 17 rows on; below, its small-matrix path sums in another order
                // (the outputs differ by float rounding of sums of terms about 10 in size).
                if s >= 17 || s == 1 {
                    assert_eq!(bits(&fast), bits(&want), "d {d}, s {s}");
                }
                for (i, (a, b)) in fast.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 2e-6 * (1.0 + b.abs()),
                        "d {d}, s {s}: {i}: {a} vs {b}"
                    );
                }
                // A sentence keeps its bits when padded as in a batch with longer ones.
                for pad in [1, 3, 8, 11] {
                    let padded = run_head(d, s + pad, pad, &qkv, ld, HeadKernel::Avx2);
                    assert_eq!(bits(&padded[..s * d]), bits(&fast), "d {d}, s {s} + {pad}");
                }
            }
        }
    }

    #[test]
    fn the_avx512_head_gives_the_avx2_heads_and_the_gemm_crates_bits() {
        if crate::kernels::isa::skip(
            "the_avx512_head_gives_the_avx2_heads_and_the_gemm_crates_bits",
            "avx512f",
            cfg!(target_arch = "x86_64") && HeadKernel::for_head(1, 64) == HeadKernel::Avx512,
        ) {
            return;
        }
        // Head widths of one and two zmm registers' multiples (16 is not BERT's, but takes the
        // single-register context path); lengths across 8, 16 and 32 and up to 512 tokens.
        for d in [16, 32, 48, 64] {
            let ld = 3 * d + 5;
            let qkv: Vec<f32> = crate::kernels::sgemm::test_values(530 * ld, d as u64)
                .iter()
                .map(|v| v * 3.0)
                .collect();
            for s in [1, 5, 8, 13, 16, 17, 31, 32, 33, 40, 53, 128, 200, 384, 512] {
                let fast = run_head(d, s, 0, &qkv, ld, HeadKernel::Avx512);
                if matches!(d, 32 | 64) && s <= 128 {
                    let avx2 = run_head(d, s, 0, &qkv, ld, HeadKernel::Avx2);
                    assert_eq!(bits(&fast), bits(&avx2), "AVX2, d {d}, s {s}");
                }
                if s >= 17 {
                    let gemm = run_head(d, s, 0, &qkv, ld, HeadKernel::Gemm);
                    assert_eq!(bits(&fast), bits(&gemm), "gemm crate, d {d}, s {s}");
                }
                for pad in [1, 3, 8, 11, 16] {
                    let padded = run_head(d, s + pad, pad, &qkv, ld, HeadKernel::Avx512);
                    assert_eq!(bits(&padded[..s * d]), bits(&fast), "d {d}, s {s} + {pad}");
                }
            }
        }
    }
}
