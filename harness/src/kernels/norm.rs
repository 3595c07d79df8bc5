//! LayerNorm over the last dimension, with the residual that precedes it in a post-norm
//! encoder layer (`LayerNorm(x + residual)`, BERT's `BertSelfOutput` and `BertOutput`)
//! added in the same pass.
//!
//! candle 0.11 runs the add on its barrier pool and the LayerNorm as rayon jobs of one row
//! each, which the calling thread sleeps through: two hand-offs between pools and an extra
//! tensor per norm, at every layer (issue 16). Here both are one pass per row on the kernels'
//! pool. The arithmetic is candle's, operation for operation (`candle-nn/src/ops.rs`,
//! `LayerNorm::cpu_fwd`: one pass for the sum and the sum of squares, `var = E[x²] - mean²`),
//! so outputs are bit-identical to `candle_nn::LayerNorm::forward(&(x + residual))`.

use candle_core::{CpuStorage, Layout, Result, Shape};

use super::ops::contiguous_f32;
use super::pool::for_each_chunk_mut;

/// Values per job: below this a hand-off costs more than the rows.
const VALUES_PER_JOB: usize = 1 << 14;

/// `LayerNorm(x)`: `x.apply_op1_no_bwd(&op)`, or `LayerNorm(x + residual)`:
/// `x.apply_op2_no_bwd(&residual, &op)` (same shape, both contiguous f32).
pub struct AddLayerNorm<'a> {
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub eps: f32,
}

impl AddLayerNorm<'_> {
    fn run(&self, x: &[f32], residual: Option<&[f32]>, shape: &Shape) -> Result<CpuStorage> {
        let width = self.weight.len();
        if shape.dims().last() != Some(&width) || self.bias.len() != width || width == 0 {
            candle_core::bail!(
                "layer-norm: weight of {width} and bias of {} for inputs of shape {shape:?}",
                self.bias.len()
            );
        }
        // Every value is written (the input or input + residual) before it is normalised.
        let mut out = super::unwritten::<f32>(x.len());
        let rows_per_job = VALUES_PER_JOB.div_ceil(width);
        let per_job = rows_per_job * width;
        let (w, b, eps) = (self.weight, self.bias, self.eps);
        for_each_chunk_mut(&mut out, per_job, |i, ys| {
            let start = i * per_job;
            let xs = &x[start..start + ys.len()];
            let rs = residual.map(|r| &r[start..start + ys.len()]);
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was just checked; `ys` is whole rows of `width`, as long as `xs`
                // and `rs`.
                return unsafe {
                    let ys = add_into_avx2(ys, xs, rs);
                    normalize_rows_avx2(ys, w, b, eps)
                };
            }
            let ys = add_into(ys, xs, rs);
            for y in ys.chunks_exact_mut(width) {
                let (mut sum, mut sum2) = (0f32, 0f32);
                for &v in y.iter() {
                    sum += v;
                    sum2 += v * v;
                }
                normalize(y, sum, sum2, w, b, eps);
            }
        });
        // SAFETY: the chunks cover `out`, and each wrote all of its values.
        Ok(CpuStorage::F32(unsafe { super::written(out) }))
    }
}

/// Write `x + residual` (or `x`) into `ys`, value by value, and return it as written.
#[inline(always)]
fn add_into<'a>(
    ys: &'a mut [std::mem::MaybeUninit<f32>],
    xs: &[f32],
    residual: Option<&[f32]>,
) -> &'a mut [f32] {
    assert!(ys.len() == xs.len() && residual.is_none_or(|r| r.len() == xs.len()));
    match residual {
        Some(rs) => {
            for ((y, &x), &r) in ys.iter_mut().zip(xs).zip(rs) {
                y.write(x + r);
            }
        }
        None => {
            for (y, &x) in ys.iter_mut().zip(xs) {
                y.write(x);
            }
        }
    }
    // SAFETY: every value was just written (the lengths are equal, so the zips covered `ys`).
    unsafe { &mut *(ys as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) }
}

/// [`add_into`] compiled for AVX2: eight lanes instead of the baseline's four (SSE2), the same
/// adds. The SSE2 loop was 1.1% of an all-MiniLM-L6-v2 32 x 32 pass.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_into_avx2<'a>(
    ys: &'a mut [std::mem::MaybeUninit<f32>],
    xs: &[f32],
    residual: Option<&[f32]>,
) -> &'a mut [f32] {
    add_into(ys, xs, residual)
}

/// Normalise one row from its sum and sum of squares (candle's arithmetic, in its order).
#[inline(always)]
fn normalize(y: &mut [f32], sum: f32, sum2: f32, w: &[f32], b: &[f32], eps: f32) {
    let n = y.len() as f32;
    let mean = sum / n;
    let var = sum2 / n - mean * mean;
    let inv_std = (var + eps).sqrt().recip();
    for ((y, &w), &b) in y.iter_mut().zip(w).zip(b) {
        *y = (*y - mean) * inv_std * w + b;
    }
}

/// The rows of `ys` normalised with AVX2, bit for bit as the scalar loop: eight rows at a
/// time are read eight columns at a time and transposed in registers, so that lane `i` of
/// the running sums adds row `i`'s values in column order, as the scalar loop does, but
/// eight rows' sums advance together instead of one add after another (that dependency
/// chain was most of a LayerNorm's time); the normalising pass is the scalar code compiled
/// for eight lanes (no fused multiply-adds, so the same roundings).
///
/// # Safety
/// The CPU must have AVX2; `ys` holds whole rows of `w.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn normalize_rows_avx2(ys: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    use std::arch::x86_64::*;
    let width = w.len();
    let vector_cols = width / 8 * 8;
    for group in ys.chunks_mut(8 * width) {
        let rows = group.len() / width;
        let (mut sum, mut sum2) = ([0f32; 8], [0f32; 8]);
        if rows == 8 {
            let (mut s, mut s2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for j in (0..vector_cols).step_by(8) {
                let r = std::array::from_fn(|i| _mm256_loadu_ps(group.as_ptr().add(i * width + j)));
                for v in super::sgemm::transpose8(r) {
                    s = _mm256_add_ps(s, v);
                    s2 = _mm256_add_ps(s2, _mm256_mul_ps(v, v));
                }
            }
            _mm256_storeu_ps(sum.as_mut_ptr(), s);
            _mm256_storeu_ps(sum2.as_mut_ptr(), s2);
        }
        let from = if rows == 8 { vector_cols } else { 0 };
        for (i, y) in group.chunks_exact_mut(width).enumerate() {
            for &v in &y[from..] {
                sum[i] += v;
                sum2[i] += v * v;
            }
            normalize(y, sum[i], sum2[i], w, b, eps);
        }
    }
}

impl candle_core::CustomOp1 for AddLayerNorm<'_> {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        Ok((self.run(x, None, l1.shape())?, l1.shape().clone()))
    }
}

impl candle_core::CustomOp2 for AddLayerNorm<'_> {
    fn name(&self) -> &'static str {
        "add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "add-layer-norm: input {:?}, residual {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let x = contiguous_f32(s1, l1, self.name())?;
        let r = contiguous_f32(s2, l2, self.name())?;
        Ok((self.run(x, Some(r), l1.shape())?, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::linear::tests::matrix;
    use candle_core::{Module, Tensor};

    fn bits(t: &Tensor) -> Vec<u32> {
        crate::kernels::bits(&t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
    }

    #[test]
    fn matches_candles_add_then_layer_norm_bit_for_bit() {
        // One row, a few rows in one job, and rows over several jobs (the last one short).
        // Groups of eight rows (AVX2) and the rows after them, widths with a tail past a
        // multiple of 8.
        for (rows, width) in [(1, 384), (7, 768), (100, 384), (45, 1000), (16, 13), (9, 7)] {
            let x = (matrix(rows, width, 3) * 4.0).unwrap();
            let r = (matrix(rows, width, 4) + 0.5).unwrap();
            let w = (matrix(1, width, 5).squeeze(0).unwrap() + 1.0).unwrap();
            let b = matrix(1, width, 6).squeeze(0).unwrap();
            let candle = candle_nn::LayerNorm::new(w.clone(), b.clone(), 1e-12);
            let (wv, bv) = (w.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
            let op = AddLayerNorm {
                weight: &wv,
                bias: &bv,
                eps: 1e-12,
            };
            let want = candle.forward(&(&x + &r).unwrap()).unwrap();
            let got = x.apply_op2_no_bwd(&r, &op).unwrap();
            assert_eq!(bits(&got), bits(&want), "{rows} x {width} with a residual");
            let want = candle.forward(&x).unwrap();
            let got = x.apply_op1_no_bwd(&op).unwrap();
            assert_eq!(bits(&got), bits(&want), "{rows} x {width} alone");
        }
    }

    #[test]
    fn mismatched_shapes_are_refused_by_name() {
        let (w, b) = (vec![1f32; 8], vec![0f32; 8]);
        let op = AddLayerNorm {
            weight: &w,
            bias: &b,
            eps: 1e-5,
        };
        let err = matrix(2, 6, 1).apply_op1_no_bwd(&op).unwrap_err();
        assert!(err.to_string().contains("weight of 8"), "{err}");
        let err = matrix(2, 8, 1)
            .apply_op2_no_bwd(&matrix(3, 8, 2), &op)
            .unwrap_err();
        assert!(err.to_string().contains("residual"), "{err}");
    }
}
