//! Fused f32 CPU ops of a Llama-family decoder layer: RMSNorm, rotary embeddings applied in
//! the projections' own `(batch, seq, heads * head_dim)` layout, SwiGLU's `silu(gate) * up`,
//! and causal grouped-query attention against a KV cache kept in that same layout.
//!
//! Each replaces a chain of candle ops: RMSNorm was six passes over the activations with five
//! allocations; the attention was a transpose copy of each projection, a copy of every KV head
//! for each query head it serves, the score matmul, a scale, the mask add, the softmax and the
//! context matmul with another transpose copy. At a small model's widths (SmolLM2-135M: 576
//! wide, 30 layers) those chains cost more than the GEMMs (BENCHMARKS.md, "Fused decoder
//! ops"). The arithmetic is the candle ops' own, operation for operation, except for the
//! order of a few sums; the exponentials of SwiGLU and the attention softmax run eight at a
//! time, bit for bit glibc's `expf` (`kernels/expf.rs`). Parity tests hold every family to
//! transformers within 1e-4.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, Layout, Result, Shape};

use super::attention::{strided_gemm, with_scores};
#[cfg(target_arch = "x86_64")]
use super::expf::expf_avx2;
use super::ops::{contiguous_f32, map_chunks_parallel};
use super::pool::{for_each_chunk_mut, for_each_job};

/// Rows per job of the row-wise ops: below this a fork costs more than the work.
const ROWS_PER_JOB: usize = 32;

/// `x / sqrt(mean(x²) + eps) * weight` over the last dimension (`LlamaRMSNorm`), as one
/// pass per row: `x.apply_op2_no_bwd(&weight, &RmsNormOp { eps })`.
pub struct RmsNormOp {
    pub eps: f32,
}

impl candle_core::CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let w = contiguous_f32(s2, l2, self.name())?;
        let width = w.len();
        if l1.shape().dims().last() != Some(&width) {
            candle_core::bail!(
                "rms-norm: weight of {width} for inputs of shape {:?}",
                l1.shape()
            );
        }
        let inv_n = 1.0 / width as f32;
        let eps = self.eps;
        map_chunks_parallel(s1, l1, self.name(), width * ROWS_PER_JOB, |xs, ys| {
            for (x, y) in xs.chunks(width).zip(ys.chunks_mut(width)) {
                let mean = x.iter().map(|v| v * v).sum::<f32>() * inv_n;
                let r = (mean + eps).sqrt();
                for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                    *y = x / r * w;
                }
            }
        })
    }
}

/// Rotary embeddings on `(batch, seq, heads * head_dim)` projections without moving heads:
/// `x.apply_op3_no_bwd(&cos, &sin, &RopeOp { .. })` with `cos` and `sin` of shape
/// `(seq, rotary_dim / 2)` for the positions of this pass. The first `rotary_dim` dimensions
/// of each head rotate (the rest pass through, Phi-3's partial rotary); `interleaved` pairs
/// dimension `2i` with `2i + 1` (llama.cpp's layout), otherwise `i` with `i + rotary_dim / 2`
/// (transformers' `rotate_half`).
pub struct RopeOp {
    pub heads: usize,
    pub head_dim: usize,
    pub interleaved: bool,
}

impl candle_core::CustomOp3 for RopeOp {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let (cos, sin) = (
            contiguous_f32(s2, l2, self.name())?,
            contiguous_f32(s3, l3, self.name())?,
        );
        let dims = l1.shape().dims();
        let (seq, half) = l2.shape().dims2()?;
        let (h, d) = (self.heads, self.head_dim);
        let row = h * d;
        if dims.len() < 2 || dims[1] != seq || x.len() % (seq * row).max(1) != 0 || 2 * half > d {
            candle_core::bail!(
                "rope: tables for {seq} positions of {} rotated dims, input {dims:?} with {h} heads of {d}",
                2 * half
            );
        }
        // Each job copies its rows and rotates them in place (a serial copy of the whole
        // input first was most of this op's time on the calling thread).
        let mut out = super::unwritten::<f32>(x.len());
        let stretch = row * ROWS_PER_JOB;
        for_each_chunk_mut(&mut out, stretch, |i, rows| {
            let src = &x[i * stretch..][..rows.len()];
            for (o, &v) in rows.iter_mut().zip(src) {
                o.write(v);
            }
            // SAFETY: every value of the stretch was just written, and `MaybeUninit<f32>` has
            // `f32`'s layout.
            let rows = unsafe { &mut *(rows as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
            for (j, y) in rows.chunks_mut(row).enumerate() {
                let p = (i * ROWS_PER_JOB + j) % seq;
                let (c, s) = (
                    &cos[p * half..(p + 1) * half],
                    &sin[p * half..(p + 1) * half],
                );
                for head in y.chunks_mut(d) {
                    if self.interleaved {
                        for i in 0..half {
                            let (a, b) = (head[2 * i], head[2 * i + 1]);
                            head[2 * i] = a * c[i] - b * s[i];
                            head[2 * i + 1] = a * s[i] + b * c[i];
                        }
                    } else {
                        for i in 0..half {
                            let (a, b) = (head[i], head[i + half]);
                            head[i] = a * c[i] - b * s[i];
                            head[i + half] = b * c[i] + a * s[i];
                        }
                    }
                }
            }
        });
        // SAFETY: the stretches cover the output, and each wrote all of its values.
        let out = unsafe { super::written(out) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `x + y` for two contiguous f32 tensors of one shape (a residual connection) over the
/// pool's threads, into an output that is not zero-filled first: `x.apply_op2_no_bwd(&y,
/// &AddOp)`. candle's CPU add ran on the calling thread alone (2.3% of a SmolLM2 Q4_1 pass's
/// samples, the pool's other thread idle meanwhile). The same IEEE sums.
pub struct AddOp;

impl candle_core::CustomOp2 for AddOp {
    fn name(&self) -> &'static str {
        "residual-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        zip_chunks_parallel(self.name(), (s1, l1), (s2, l2), |o, x, y| {
            for ((o, &a), &b) in o.iter_mut().zip(x).zip(y) {
                o.write(a + b);
            }
        })
    }
}

/// `x + y` as the fused decoder layers take their residuals: [`AddOp`] for CPU f32 tensors
/// of one shape, candle's add otherwise.
pub fn residual_add(
    x: &candle_core::Tensor,
    y: &candle_core::Tensor,
) -> Result<candle_core::Tensor> {
    let cpu_f32 = |t: &candle_core::Tensor| {
        t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous()
    };
    if cpu_f32(x) && cpu_f32(y) && x.shape() == y.shape() {
        return x.apply_op2_no_bwd(y, &AddOp);
    }
    x + y
}

/// `silu(gate) * up` (SwiGLU) in one pass: `gate.apply_op2_no_bwd(&up, &SwiGluOp)`.
pub struct SwiGluOp;

impl candle_core::CustomOp2 for SwiGluOp {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        zip_chunks_parallel(self.name(), (s1, l1), (s2, l2), swiglu_into)
    }
}

/// An element-wise op of two contiguous f32 inputs of one shape: `f(out, a, b)` on each
/// stretch of [`ZIP_CHUNK`] values (the last shorter), over the pool, into an output that is
/// not zero-filled first (a serial memset of the whole output otherwise: 5.5 MB a layer for
/// SmolLM2's SwiGLU at 8 x 113); `f` must write every value of its stretch.
fn zip_chunks_parallel(
    op: &str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    f: impl Fn(&mut [MaybeUninit<f32>], &[f32], &[f32]) + Sync + Send,
) -> Result<(CpuStorage, Shape)> {
    let (a, b) = (contiguous_f32(s1, l1, op)?, contiguous_f32(s2, l2, op)?);
    if l1.shape() != l2.shape() {
        candle_core::bail!(
            "{op}: inputs of shapes {:?} and {:?}",
            l1.shape(),
            l2.shape()
        );
    }
    let mut out = super::unwritten::<f32>(a.len());
    for_each_chunk_mut(&mut out, ZIP_CHUNK, |i, o| {
        let at = i * ZIP_CHUNK;
        f(o, &a[at..at + o.len()], &b[at..at + o.len()]);
    });
    // SAFETY: the stretches cover the output, and `f` wrote all of each.
    let out = unsafe { super::written(out) };
    Ok((CpuStorage::F32(out), l1.shape().clone()))
}

/// Values per job of [`zip_chunks_parallel`].
const ZIP_CHUNK: usize = 1 << 14;

/// `o = silu(g) * u`, candle's `silu` (`g / (1 + exp(-g))`) operation for operation. With
/// AVX2 and FMA eight at a time, the exponentials [`expf_avx2`]'s, which are glibc's `expf`
/// bit for bit: the same results as the scalar loop, at a fraction of its time (libm's
/// `expf`, one call per value here and in the softmax, was 6.2% of a SmolLM2 8 x 113 pass).
fn swiglu_into(o: &mut [MaybeUninit<f32>], g: &[f32], u: &[f32]) {
    assert!(
        o.len() == g.len() && o.len() == u.len(),
        "swiglu: lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the features were just checked; the lengths match.
        return unsafe { swiglu_avx2(o, g, u) };
    }
    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
        o.write(g / (1.0 + (-g).exp()) * u);
    }
}

/// [`swiglu_into`] in AVX2 registers.
///
/// # Safety
/// The CPU must have AVX2 and FMA; the three slices are as long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_avx2(o: &mut [MaybeUninit<f32>], g: &[f32], u: &[f32]) {
    use std::arch::x86_64::*;
    let (one, sign) = (_mm256_set1_ps(1.0), _mm256_set1_ps(-0.0));
    let eight = |g: __m256, u: __m256| {
        let e = expf_avx2(_mm256_xor_ps(g, sign));
        _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u)
    };
    let full = o.len() / 8 * 8;
    for i in (0..full).step_by(8) {
        let v = eight(
            _mm256_loadu_ps(g.as_ptr().add(i)),
            _mm256_loadu_ps(u.as_ptr().add(i)),
        );
        _mm256_storeu_ps(o.as_mut_ptr().add(i).cast::<f32>(), v);
    }
    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u).skip(full) {
        o.write(g / (1.0 + (-g).exp()) * u);
    }
}

/// `x = exp(x - max)` for each value (`expf` of the f32 difference, as the softmax's
/// definition computes it), eight at a time with AVX2 and FMA ([`expf_avx2`], the same bits).
fn exp_minus_in_place(xs: &mut [f32], max: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the features were just checked.
        return unsafe { exp_minus_avx2(xs, max) };
    }
    for x in xs {
        *x = (*x - max).exp();
    }
}

/// [`exp_minus_in_place`] in AVX2 registers.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_minus_avx2(xs: &mut [f32], max: f32) {
    use std::arch::x86_64::*;
    let m = _mm256_set1_ps(max);
    let full = xs.len() / 8 * 8;
    let p = xs.as_mut_ptr();
    for i in (0..full).step_by(8) {
        let v = _mm256_sub_ps(_mm256_loadu_ps(p.add(i)), m);
        _mm256_storeu_ps(p.add(i), expf_avx2(v));
    }
    for x in &mut xs[full..] {
        *x = (*x - max).exp();
    }
}

/// One query's attention weights in place: `row` holds its scores against every key; it
/// sees the keys in `seen` that `valid` marks (all of them without `valid`). Those get the
/// softmax of their scores (soft-capped first with `softcap`), every other key exactly 0, and
/// a row that sees no key stays zero, not NaN. The softmax runs from the first key seen, with
/// the unseen keys inside its span at -inf (weight exactly 0, adding exactly 0 to the sum),
/// so a row's weights are the same bits wherever its keys sit (after left padding, at a
/// window's start), and the same bits as the scalar loop this replaced.
///
/// With `candle`, the sum and the normalisation are those of candle's `softmax_last_dim` over
/// an additive mask, as the GPT-2 port's unfused path computes them: the sum over every key of
/// the row (the masked ones exact zeros) in candle's order (four vectors of eight lanes on
/// AVX2 hosts, [`candle_row_sum`]), then each weight divided by it; so the GPT-2 port's fused
/// path gives that path's bits.
fn causal_softmax_row(
    row: &mut [f32],
    seen: std::ops::RangeInclusive<usize>,
    valid: Option<&[bool]>,
    softcap: Option<f32>,
    candle: bool,
) {
    let Some(span) = exponentials(row, seen, valid, softcap) else {
        return;
    };
    if candle {
        let sum = candle_row_sum(row);
        for x in &mut row[span] {
            *x /= sum;
        }
        return;
    }
    // The definition's arithmetic: the sum in key order (so in f32 exactly as before the
    // exponentials were vectorised), one reciprocal.
    let sum = row[span.clone()].iter().fold(0f32, |s, &x| s + x);
    let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    for x in &mut row[span] {
        *x *= inv;
    }
}

/// The first half of [`causal_softmax_row`]: `exp(x - max)` over the keys seen, exactly 0
/// for every other key; the span from the first key seen to the last, or `None` (the row all
/// zeros) when the query sees no key.
fn exponentials(
    row: &mut [f32],
    seen: std::ops::RangeInclusive<usize>,
    valid: Option<&[bool]>,
    softcap: Option<f32>,
) -> Option<std::ops::RangeInclusive<usize>> {
    let (lo, p) = (*seen.start(), *seen.end());
    let marked = |j: usize| valid.is_none_or(|m| m[j]);
    let Some(first) = (lo..=p).find(|&j| marked(j)) else {
        row.fill(0.0);
        return None;
    };
    if valid.is_some() || softcap.is_some() {
        for (j, x) in row.iter_mut().enumerate().take(p + 1).skip(first) {
            if !marked(j) {
                *x = f32::NEG_INFINITY;
            } else if let Some(cap) = softcap {
                *x = (*x / cap).tanh() * cap;
            }
        }
    }
    let span = &mut row[first..=p];
    let max = span.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    exp_minus_in_place(span, max);
    row[..first].fill(0.0);
    row[p + 1..].fill(0.0);
    Some(first..=p)
}

/// The sum of `row` as candle's `vec_sum` takes it (candle-core `cpu/avx.rs`, used where the
/// CPU has AVX2): four accumulators of eight lanes over each 32 values, folded pairwise, the
/// eight lanes folded as two `hadd`s, then the values past the last multiple of 32 one by
/// one; in order, one by one, without AVX2 (its `scalar_vec_sum`).
fn candle_row_sum(row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the feature was just checked.
        return unsafe { candle_row_sum_avx(row) };
    }
    row.iter().fold(0f32, |s, &x| s + x)
}

/// [`candle_row_sum`] in AVX registers.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn candle_row_sum_avx(row: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let full = row.len() / 32 * 32;
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in (0..full).step_by(32) {
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm256_add_ps(*a, _mm256_loadu_ps(row.as_ptr().add(i + 8 * j)));
        }
    }
    let (a01, a23) = (_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let x = _mm256_add_ps(a01, a23);
    let t0 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let t1 = _mm_hadd_ps(t0, t0);
    let mut sum = _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
    for &v in &row[full..] {
        sum += v;
    }
    sum
}

/// Causal grouped-query attention: `q.apply_op3_no_bwd(&k, &v, &CausalAttention { .. })` with
/// queries `(batch, seq, heads * head_dim)` and keys and values `(batch, keys, kv_heads *
/// head_dim)`, the last `seq` keys being the queries' own positions (the rest come from the
/// cache). Query head `h` reads KV head `h / (heads / kv_heads)` in place, without copies.
/// A query at position `p` sees keys `j <= p`, inside `window` when set (`p - window < j`),
/// and only keys marked valid in `key_valid` (`batch * keys`, padding false) when given.
/// Scores are scaled, optionally soft-capped (`tanh(x / cap) * cap`, Gemma 2), and
/// soft-maxed over the keys seen; the context lands in each head's columns of the output.
pub struct CausalAttention<'a> {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub softcap: Option<f32>,
    pub window: Option<usize>,
    pub key_valid: Option<&'a [bool]>,
    /// The softmax's sum and normalisation as candle's `softmax_last_dim` takes them
    /// (the GPT-2 port, whose unfused path is candle's ops); else the sum in key order and a
    /// reciprocal (the Llama port). See `causal_softmax_row`.
    pub candle_softmax: bool,
}

/// Query rows per block of [`causal_row_blocks`].
const ROW_BLOCK: usize = 32;

/// Fewest query rows in a block. The `gemm` crate sums each output in one chain of FMAs from
/// the first term (then times the scale) on its general kernels only, which a product takes
/// with more than one row and column and more than 256 outputs; at 256 or fewer a
/// dot-product path sums in another order. 17 rows against at least 17 keys stay general.
const MIN_BLOCK_ROWS: usize = 17;

/// Longest key span whose products are blocked: up to 512 terms the `gemm` crate sums each
/// output of `probs · v` in one chain from the first key, so a block that stops at its last
/// row's key drops only exact zeros at the end of the chain; past 512 it splits the chain
/// in places that depend on the product's shape.
const MAX_BLOCKED_KEYS: usize = 512;

/// The blocks of query rows `(start, end)` over which [`CausalAttention`] runs its two
/// products: a query at position `p` sees no key past `p`, so a block's products need only
/// the keys up to its last row's, and in a context pass about half of the scores and of the
/// context's multiply-adds (the masked triangle) are never computed. Blocks of [`ROW_BLOCK`]
/// rows, the last one merged into the one before when it would have fewer than
/// [`MIN_BLOCK_ROWS`]; one block of all `s` rows (the products as one call each, as before)
/// when `s` is too short for two blocks or the head wider than 512.
/// Every output gets the same bits as with one block (tested): each score is one chain of
/// `d` FMAs times the scale whatever the block, and each context value one chain over the
/// keys, whose masked tail adds exact zeros.
fn causal_row_blocks(s: usize, t: usize, d: usize) -> Vec<(usize, usize)> {
    if s < 2 * MIN_BLOCK_ROWS || d > MAX_BLOCKED_KEYS || t > MAX_BLOCKED_KEYS {
        return vec![(0, s)];
    }
    let mut blocks: Vec<(usize, usize)> = (0..s)
        .step_by(ROW_BLOCK)
        .map(|i0| (i0, (i0 + ROW_BLOCK).min(s)))
        .collect();
    if let [.., prev, last] = blocks.as_mut_slice() {
        if last.1 - last.0 < MIN_BLOCK_ROWS {
            prev.1 = last.1;
            blocks.pop();
        }
    }
    blocks
}

impl candle_core::CustomOp3 for CausalAttention<'_> {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = contiguous_f32(s1, l1, self.name())?;
        let k = contiguous_f32(s2, l2, self.name())?;
        let v = contiguous_f32(s3, l3, self.name())?;
        let (b, s, qw) = l1.shape().dims3()?;
        let (kb, t, kw) = l2.shape().dims3()?;
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
        if qw != h * d
            || kw != kvh * d
            || kb != b
            || l3.shape() != l2.shape()
            || t < s
            || kvh == 0
            || h % kvh != 0
            || self.key_valid.is_some_and(|m| m.len() != b * t)
        {
            candle_core::bail!(
                "causal-attention: queries {:?}, keys {:?}, values {:?} for {h} heads / {kvh} KV heads of {d}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let out = self.attend((q, k, v), (b, s, t), &causal_row_blocks(s, t, d));
        Ok((CpuStorage::F32(out), Shape::from((b, s, qw))))
    }
}

impl CausalAttention<'_> {
    /// The attention of checked operands: queries `(b, s, heads * head_dim)`, keys and values
    /// `(b, t, kv_heads * head_dim)`, the two products of each (sequence, head) run over the
    /// row `blocks` ([`causal_row_blocks`]).
    fn attend(
        &self,
        (q, k, v): (&[f32], &[f32], &[f32]),
        (b, s, t): (usize, usize, usize),
        blocks: &[(usize, usize)],
    ) -> Vec<f32> {
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
        let (qw, kw) = (h * d, kvh * d);
        let past = t - s;
        let groups = h / kvh;
        // Not zero-filled: each (sequence, head) writes its columns of every row below.
        let mut out = super::unwritten::<f32>(b * s * qw);
        let items = b * h;
        let out_ptr = out.as_mut_ptr() as usize;
        // One job per (sequence, head), taken in turn by the pool's threads.
        for_each_job(items, |item| {
            with_scores(s * t, |scores| {
                let (bi, hi) = (item / h, item % h);
                let g = hi / groups;
                let valid = self.key_valid.map(|m| &m[bi * t..(bi + 1) * t]);
                // SAFETY: every pointer stays inside sequence bi's rows of its input, and
                // each (sequence, head) writes only its own d columns of its s output rows,
                // so no two items write the same element.
                unsafe {
                    let qp = q.as_ptr().add(bi * s * qw + hi * d);
                    let kp = k.as_ptr().add(bi * t * kw + g * d);
                    let vp = v.as_ptr().add(bi * t * kw + g * d);
                    let dst = (out_ptr as *mut f32).add(bi * s * qw + hi * d);
                    for &(i0, i1) in blocks {
                        // The keys the block's last query sees.
                        let keys = past + i1;
                        // scores = scale * q kᵀ: (rows x d) by (d x keys).
                        strided_gemm(
                            i1 - i0,
                            keys,
                            d,
                            scores.as_mut_ptr().add(i0 * t),
                            t,
                            qp.add(i0 * qw),
                            qw,
                            kp,
                            kw,
                            1,
                            self.scale,
                        );
                        // Each row in full: the softmax zero-fills past its query, and the
                        // GPT-2 sum runs over every key of the row in candle's order.
                        for (r, row) in scores[i0 * t..i1 * t].chunks_mut(t).enumerate() {
                            let p = past + i0 + r;
                            let lo = self.window.map_or(0, |w| (p + 1).saturating_sub(w));
                            causal_softmax_row(
                                row,
                                lo..=p,
                                valid,
                                self.softcap,
                                self.candle_softmax,
                            );
                        }
                        // context = probs v: (rows x keys) by (keys x d), into the head's
                        // columns.
                        strided_gemm(
                            i1 - i0,
                            d,
                            keys,
                            dst.add(i0 * qw),
                            qw,
                            scores.as_ptr().add(i0 * t),
                            t,
                            vp,
                            1,
                            kw,
                            1.0,
                        );
                    }
                }
            })
        });
        // SAFETY: the context products wrote every row of every head's columns.
        unsafe { super::written(out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bits;
    use candle_core::{Device, Tensor, D};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A small deterministic spread of signs and magnitudes.
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32
                    / 1000.0
                    - 1.0
            })
            .collect()
    }

    fn tensor(v: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// A tensor's values, flattened.
    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let (a, b) = (flat(a), flat(b));
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
        }
    }

    #[test]
    fn rms_norm_matches_candles_ops() {
        let x = tensor(values(3 * 40 * 24, 1), &[3, 40, 24]);
        let w = tensor(values(24, 2), &[24]);
        let want = x
            .broadcast_div(
                &(x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-5)
                    .unwrap()
                    .sqrt()
                    .unwrap(),
            )
            .unwrap()
            .broadcast_mul(&w)
            .unwrap();
        close(
            &x.apply_op2_no_bwd(&w, &RmsNormOp { eps: 1e-5 }).unwrap(),
            &want,
            1e-5,
        );
        let bad = tensor(values(10, 3), &[10]);
        assert!(x.apply_op2_no_bwd(&bad, &RmsNormOp { eps: 1e-5 }).is_err());
    }

    #[test]
    fn rope_rotates_each_head_in_both_layouts_and_passes_the_rest_through() {
        // 74 rows: three of the op's stretches of 32, the second crossing into the second sequence.
        let (b, s, h, d, half) = (2, 37, 3, 8, 3);
        let x = tensor(values(b * s * h * d, 4), &[b, s, h * d]);
        let angles = values(s * half, 5);
        let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
        let xs = flat(&x);
        for interleaved in [false, true] {
            let got = flat(
                &x.apply_op3_no_bwd(
                    &tensor(cos.clone(), &[s, half]),
                    &tensor(sin.clone(), &[s, half]),
                    &RopeOp {
                        heads: h,
                        head_dim: d,
                        interleaved,
                    },
                )
                .unwrap(),
            );
            let mut want = xs.clone();
            for r in 0..b * s {
                let p = r % s;
                for hd in 0..h {
                    let o = r * h * d + hd * d;
                    for i in 0..half {
                        let (ia, ib) = if interleaved {
                            (2 * i, 2 * i + 1)
                        } else {
                            (i, i + half)
                        };
                        let (a, c) = (xs[o + ia], xs[o + ib]);
                        let (co, si) = (cos[p * half + i], sin[p * half + i]);
                        want[o + ia] = a * co - c * si;
                        want[o + ib] = a * si + c * co;
                    }
                }
            }
            assert_eq!(got, want, "interleaved: {interleaved}");
            // Dimensions past the rotated ones are untouched (partial rotary).
            let o = h * d + d;
            assert_eq!(got[o + 2 * half..o + d], xs[o + 2 * half..o + d]);
        }
    }

    #[test]
    fn the_residual_add_is_candles_add_over_several_stretches() {
        // Longer than one stretch, with a partial last one; a strided input goes to candle.
        let n = (1 << 14) * 2 + 77;
        let (x, y) = (
            tensor(values(n, 31), &[1, n]),
            tensor(values(n, 32), &[1, n]),
        );
        let want = flat(&(&x + &y).unwrap());
        assert_eq!(bits(&flat(&residual_add(&x, &y).unwrap())), bits(&want));
        assert_eq!(
            bits(&flat(&x.apply_op2_no_bwd(&y, &AddOp).unwrap())),
            bits(&want)
        );
        let xt = tensor(values(6, 33), &[2, 3]).t().unwrap();
        let yt = tensor(values(6, 34), &[3, 2]);
        let want = flat(&(&xt + &yt).unwrap());
        assert_eq!(bits(&flat(&residual_add(&xt, &yt).unwrap())), bits(&want));
        assert!(xt.apply_op2_no_bwd(&yt, &AddOp).is_err(), "strided input");
        let wrong = tensor(values(4, 35), &[1, 4]);
        assert!(x.apply_op2_no_bwd(&wrong, &AddOp).is_err(), "shapes differ");
    }

    #[test]
    fn swiglu_is_silu_of_the_gate_times_up() {
        // Gates from -100 to 100 (past the exponential's range both ways), 7 x 33 values so
        // that the last vector is partial.
        let gates: Vec<f32> = values(7 * 33, 6).iter().map(|v| v * 100.0).collect();
        let ups = values(7 * 33, 7);
        let (g, u) = (
            tensor(gates.clone(), &[7, 33]),
            tensor(ups.clone(), &[7, 33]),
        );
        let got = flat(&g.apply_op2_no_bwd(&u, &SwiGluOp).unwrap());
        // candle's own ops, bit for bit (its silu calls libm's expf per value).
        let want = (g.silu().unwrap() * &u).unwrap();
        assert_eq!(bits(&got), bits(&flat(&want)));
        // Past one of the op's stretches of 2^14 values, the last one partial.
        let gates2: Vec<f32> = values(3 * 6001, 8).iter().map(|v| v * 20.0).collect();
        let (g2, u2) = (
            tensor(gates2, &[3, 6001]),
            tensor(values(3 * 6001, 9), &[3, 6001]),
        );
        let got2 = flat(&g2.apply_op2_no_bwd(&u2, &SwiGluOp).unwrap());
        let want2 = (g2.silu().unwrap() * &u2).unwrap();
        assert_eq!(bits(&got2), bits(&flat(&want2)));
        // And within 1e-6 of the exact value.
        for (i, ((&g, &u), &o)) in gates.iter().zip(&ups).zip(&got).enumerate() {
            let (g64, u64) = (g as f64, u as f64);
            let want = g64 / (1.0 + (-g64).exp()) * u64;
            assert!(
                (o as f64 - want).abs() <= 1e-6 * want.abs() + 1e-30,
                "{i}: silu({g}) * {u} = {o}, want {want}"
            );
        }
    }

    /// One query's weights as the scalar loop computed them before (the definition, key by
    /// key): the reference for [`causal_softmax_row`]'s bits.
    fn scalar_row(row: &[f32], seen: impl Fn(usize) -> bool) -> Vec<f32> {
        let mut row = row.to_vec();
        let max = (0..row.len())
            .filter(|&j| seen(j))
            .fold(f32::NEG_INFINITY, |m, j| m.max(row[j]));
        let mut sum = 0f32;
        for (j, x) in row.iter_mut().enumerate() {
            *x = if seen(j) { (*x - max).exp() } else { 0.0 };
            sum += *x;
        }
        let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        row.iter().map(|x| x * inv).collect()
    }

    #[test]
    fn a_causal_rows_weights_are_the_scalar_loops_wherever_its_keys_sit() {
        let scores: Vec<f32> = values(37, 11).iter().map(|v| v * 9.0).collect();
        // The row alone, seeing every key.
        let mut alone = scores.clone();
        causal_softmax_row(&mut alone, 0..=36, None, None, false);
        assert_eq!(bits(&alone), bits(&scalar_row(&scores, |_| true)));
        // After 5 keys of left padding and with 3 later keys: the same bits, the rest 0.
        let mut valid = vec![false; 5];
        valid.extend([true; 40]);
        let mut padded = vec![7.0; 5];
        padded.extend(&scores);
        padded.extend([3.0; 3]);
        let mut row = padded.clone();
        causal_softmax_row(&mut row, 0..=41, Some(&valid), None, false);
        assert_eq!(bits(&row[5..42]), bits(&alone));
        assert!(row[..5].iter().chain(&row[42..]).all(|&w| w == 0.0));
        // The same from a window's start, no mask.
        let mut row = padded.clone();
        causal_softmax_row(&mut row, 5..=41, None, None, false);
        assert_eq!(bits(&row[5..42]), bits(&alone));
        // A padded key inside the span gets exactly 0; the row is the scalar loop's.
        let mut holes = valid.clone();
        holes[20] = false;
        let mut row = padded.clone();
        causal_softmax_row(&mut row, 3..=41, Some(&holes), None, false);
        let want = scalar_row(&padded, |j| (3..=41).contains(&j) && holes[j]);
        assert_eq!(bits(&row), bits(&want));
        assert_eq!(row[20], 0.0);
        // Soft-capped scores, then the scalar loop's bits again.
        let mut row = padded.clone();
        causal_softmax_row(&mut row, 0..=44, Some(&valid), Some(5.0), false);
        let capped: Vec<f32> = padded.iter().map(|x| (x / 5.0).tanh() * 5.0).collect();
        assert_eq!(bits(&row), bits(&scalar_row(&capped, |j| valid[j])));
        // A row that sees no key is all zeros, not NaN.
        let mut row = scores.clone();
        causal_softmax_row(&mut row, 0..=3, Some(&[false; 37]), Some(30.0), false);
        assert!(row.iter().all(|&w| w == 0.0));
    }

    /// Attention one query at a time from the definition, for the fused op to match.
    #[allow(clippy::too_many_arguments)]
    fn reference_attention(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        (b, s, t): (usize, usize, usize),
        (h, kvh, d): (usize, usize, usize),
        scale: f32,
        softcap: Option<f32>,
        window: Option<usize>,
        valid: Option<&[bool]>,
    ) -> Vec<f32> {
        let mut out = vec![0f32; b * s * h * d];
        for bi in 0..b {
            for hi in 0..h {
                let g = hi / (h / kvh);
                for i in 0..s {
                    let p = t - s + i;
                    let seen: Vec<usize> = (0..t)
                        .filter(|&j| j <= p && window.is_none_or(|w| j + w > p))
                        .filter(|&j| valid.is_none_or(|m| m[bi * t + j]))
                        .collect();
                    let scores: Vec<f32> = seen
                        .iter()
                        .map(|&j| {
                            let dot: f32 = (0..d)
                                .map(|x| {
                                    q[(bi * s + i) * h * d + hi * d + x]
                                        * k[(bi * t + j) * kvh * d + g * d + x]
                                })
                                .sum();
                            let z = dot * scale;
                            softcap.map_or(z, |c| (z / c).tanh() * c)
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = scores.iter().map(|z| (z - max).exp()).collect();
                    let sum: f32 = e.iter().sum();
                    for x in 0..d {
                        out[(bi * s + i) * h * d + hi * d + x] = seen
                            .iter()
                            .zip(&e)
                            .map(|(&j, w)| w / sum * v[(bi * t + j) * kvh * d + g * d + x])
                            .sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_candle_softmax_row_is_candles_softmax_over_an_additive_mask() {
        // Rows longer and shorter than candle's 32-value steps; keys past the query and one
        // padded key masked with f32::MIN as the GPT-2 port's bias does.
        for t in [7, 32, 45, 100] {
            let scores: Vec<f32> = values(t, 12).iter().map(|v| v * 6.0).collect();
            let p = t - 3;
            let mut valid = vec![true; t];
            valid[2] = false;
            let bias: Vec<f32> = (0..t)
                .map(|j| if j <= p && valid[j] { 0.0 } else { f32::MIN })
                .collect();
            let masked: Vec<f32> = scores.iter().zip(&bias).map(|(s, b)| s + b).collect();
            let want = flat(&candle_nn::ops::softmax_last_dim(&tensor(masked, &[1, t])).unwrap());
            let mut row = scores.clone();
            causal_softmax_row(&mut row, 0..=p, Some(&valid), None, true);
            assert_eq!(bits(&row), bits(&want), "{t} keys");
        }
    }

    /// `op` on queries `(b, s, heads · head_dim)` and keys and values `(b, t, kv_heads ·
    /// head_dim)`, flattened.
    fn attend(
        op: &CausalAttention,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        (b, s, t): (usize, usize, usize),
    ) -> Vec<f32> {
        let (qw, kw) = (op.heads * op.head_dim, op.kv_heads * op.head_dim);
        let kv = |x: &[f32]| tensor(x.to_vec(), &[b, t, kw]);
        flat(
            &tensor(q.to_vec(), &[b, s, qw])
                .apply_op3_no_bwd(&kv(k), &kv(v), op)
                .unwrap(),
        )
    }

    #[test]
    fn row_blocks_cover_the_rows_with_at_least_17_each_and_only_where_they_are_exact() {
        let blocks = |s, t| causal_row_blocks(s, t, 64);
        assert_eq!(blocks(33, 33), vec![(0, 33)]);
        assert_eq!(blocks(48, 48), vec![(0, 48)]);
        assert_eq!(blocks(49, 49), vec![(0, 32), (32, 49)]);
        assert_eq!(blocks(100, 120), vec![(0, 32), (32, 64), (64, 100)]);
        assert_eq!(
            blocks(113, 113),
            vec![(0, 32), (32, 64), (64, 96), (96, 113)]
        );
        assert_eq!(blocks(100, 513), vec![(0, 100)]);
        assert_eq!(causal_row_blocks(100, 100, 600), vec![(0, 100)]);
    }

    #[test]
    fn blocked_products_give_the_one_products_bits() {
        // Context passes with and without a cache, short and long enough for several blocks,
        // both softmaxes, a window, a soft-cap, padding; GQA heads of 64.
        let (b, h, kvh, d) = (2, 4, 2, 64);
        type Case = (usize, usize, bool, Option<usize>, Option<f32>);
        let cases: [Case; 7] = [
            // One block: a second of 4 rows against 36 keys would leave the general kernels.
            (36, 0, false, None, None),
            (49, 0, false, None, None),
            (50, 7, true, None, None),
            (113, 0, false, Some(40), None),
            (113, 20, true, None, Some(0.7)),
            (130, 300, false, None, None),
            // One block: past 512 keys the gemm crate splits `probs · v`'s chains by the
            // product's shape (blocking these rows changed the bits).
            (70, 600, false, None, None),
        ];
        for (s, past, candle_softmax, window, softcap) in cases {
            let t = past + s;
            let q = values(b * s * h * d, 21);
            let k = values(b * t * kvh * d, 22);
            let v = values(b * t * kvh * d, 23);
            let mut valid = vec![true; b * t];
            valid[t + 3] = false;
            let op = CausalAttention {
                heads: h,
                kv_heads: kvh,
                head_dim: d,
                scale: 0.125,
                softcap,
                window,
                key_valid: Some(&valid),
                candle_softmax,
            };
            let several = s != 36 && t <= MAX_BLOCKED_KEYS;
            assert_eq!(causal_row_blocks(s, t, d).len() > 1, several);
            let one_block = op.attend((&q, &k, &v), (b, s, t), &[(0, s)]);
            assert_eq!(
                bits(&attend(&op, &q, &k, &v, (b, s, t))),
                bits(&one_block),
                "{s} queries, {t} keys"
            );
        }
    }

    #[test]
    fn causal_attention_matches_the_definition_with_a_cache_groups_windows_caps_and_padding() {
        let (b, s, t, h, kvh, d) = (2, 4, 7, 6, 2, 8);
        let q = values(b * s * h * d, 8);
        let k = values(b * t * kvh * d, 9);
        let v = values(b * t * kvh * d, 10);
        let mut valid = vec![true; b * t];
        valid[t + 6] = false; // the second sequence's last key is padding
        valid[t + 5] = false;
        // (soft-cap, window, valid keys)
        type Case<'a> = (Option<f32>, Option<usize>, Option<&'a [bool]>);
        let cases: [Case; 4] = [
            (None, None, None),
            (Some(0.5), None, None),
            (None, Some(3), None),
            (None, Some(5), Some(&valid)),
        ];
        for ((softcap, window, key_valid), candle_softmax) in
            cases.into_iter().flat_map(|c| [(c, false), (c, true)])
        {
            let op = CausalAttention {
                heads: h,
                kv_heads: kvh,
                head_dim: d,
                scale: 0.35,
                softcap,
                window,
                key_valid,
                candle_softmax,
            };
            let got = attend(&op, &q, &k, &v, (b, s, t));
            let want = reference_attention(
                &q,
                &k,
                &v,
                (b, s, t),
                (h, kvh, d),
                0.35,
                softcap,
                window,
                key_valid,
            );
            for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (x - y).abs() < 1e-5,
                    "{softcap:?} {window:?}: element {i}: {x} vs {y}"
                );
            }
        }
        // Shapes that do not fit the heads are refused, not read out of bounds.
        let op = CausalAttention {
            heads: 5,
            kv_heads: 2,
            head_dim: d,
            scale: 1.0,
            softcap: None,
            window: None,
            key_valid: None,
            candle_softmax: false,
        };
        let r = tensor(q.clone(), &[b, s, h * d]).apply_op3_no_bwd(
            &tensor(k.clone(), &[b, t, kvh * d]),
            &tensor(v.clone(), &[b, t, kvh * d]),
            &op,
        );
        assert!(r.is_err());
    }
}
