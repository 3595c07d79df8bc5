//! Fused multi-head self-attention on the CPU (f32): one candle op per layer.

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
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0f32; b * s * h];
        let items = b * self.heads;
        let out_ptr = out.as_mut_ptr() as usize;
        // One job per (sequence, head), taken in turn by the pool's threads, each with its
        // own score buffer.
        super::pool::for_each_job(items, |item| {
            with_scores(s * s, |scores| {
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
                    // scores = scale * q k^T: (s x d) by (d x s).
                    strided_gemm(s, s, d, scores.as_mut_ptr(), s, q, h3, k, h3, 1, scale);
                    let bias = &bias[bi * s..(bi + 1) * s];
                    for row in scores.chunks_mut(s) {
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
                    // context = probs v: (s x s) by (s x d), into the head's columns.
                    let dst = (out_ptr as *mut f32).add(bi * s * h + hi * d);
                    strided_gemm(s, d, s, dst, h, scores.as_ptr(), s, v, 1, h3, 1.0);
                }
            })
        });
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from((b, s, h)),
        ))
    }
}
