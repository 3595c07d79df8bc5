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
//! order of a few sums; parity tests hold every family to transformers within 1e-4.

use candle_core::{CpuStorage, Layout, Result, Shape};

use super::attention::{strided_gemm, with_scores};
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
        let mut out = x.to_vec();
        for_each_chunk_mut(&mut out, row * ROWS_PER_JOB, |i, rows| {
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
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
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
        let (g, u) = (
            contiguous_f32(s1, l1, self.name())?,
            contiguous_f32(s2, l2, self.name())?,
        );
        if l1.shape() != l2.shape() {
            candle_core::bail!("swiglu: gate {:?}, up {:?}", l1.shape(), l2.shape());
        }
        let mut out = vec![0f32; g.len()];
        const CHUNK: usize = 1 << 14;
        for_each_chunk_mut(&mut out, CHUNK, |i, o| {
            let (g, u) = (
                &g[i * CHUNK..i * CHUNK + o.len()],
                &u[i * CHUNK..i * CHUNK + o.len()],
            );
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                // candle's silu: x / (1 + exp(-x)).
                *o = g / (1.0 + (-g).exp()) * u;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
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
        let past = t - s;
        let groups = h / kvh;
        let mut out = vec![0f32; b * s * qw];
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
                    // scores = scale * q kᵀ: (s x d) by (d x t).
                    strided_gemm(
                        s,
                        t,
                        d,
                        scores.as_mut_ptr(),
                        t,
                        qp,
                        qw,
                        kp,
                        kw,
                        1,
                        self.scale,
                    );
                    for (i, row) in scores.chunks_mut(t).enumerate() {
                        let p = past + i;
                        let lo = self.window.map_or(0, |w| (p + 1).saturating_sub(w));
                        let seen = |j: usize| j >= lo && j <= p && valid.is_none_or(|m| m[j]);
                        let mut max = f32::NEG_INFINITY;
                        for (j, x) in row.iter_mut().enumerate() {
                            if !seen(j) {
                                continue;
                            }
                            if let Some(cap) = self.softcap {
                                *x = (*x / cap).tanh() * cap;
                            }
                            max = max.max(*x);
                        }
                        let mut sum = 0f32;
                        for (j, x) in row.iter_mut().enumerate() {
                            *x = if seen(j) { (*x - max).exp() } else { 0.0 };
                            sum += *x;
                        }
                        // A row that sees no key (all padding) stays zero, not NaN.
                        let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
                        for x in row.iter_mut() {
                            *x *= inv;
                        }
                    }
                    // context = probs v: (s x t) by (t x d), into the head's columns.
                    let dst = (out_ptr as *mut f32).add(bi * s * qw + hi * d);
                    strided_gemm(s, d, t, dst, qw, scores.as_ptr(), t, vp, 1, kw, 1.0);
                }
            })
        });
        Ok((CpuStorage::F32(out), Shape::from((b, s, qw))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
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
        let (b, s, h, d, half) = (2, 5, 3, 8, 3);
        let x = tensor(values(b * s * h * d, 4), &[b, s, h * d]);
        let angles = values(s * half, 5);
        let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for interleaved in [false, true] {
            let got = x
                .apply_op3_no_bwd(
                    &tensor(cos.clone(), &[s, half]),
                    &tensor(sin.clone(), &[s, half]),
                    &RopeOp {
                        heads: h,
                        head_dim: d,
                        interleaved,
                    },
                )
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
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
    fn swiglu_is_silu_of_the_gate_times_up() {
        let g = tensor(values(7 * 33, 6), &[7, 33]);
        let u = tensor(values(7 * 33, 7), &[7, 33]);
        let want = (g.silu().unwrap() * &u).unwrap();
        close(&g.apply_op2_no_bwd(&u, &SwiGluOp).unwrap(), &want, 1e-6);
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
        for (softcap, window, key_valid) in cases {
            let op = CausalAttention {
                heads: h,
                kv_heads: kvh,
                head_dim: d,
                scale: 0.35,
                softcap,
                window,
                key_valid,
            };
            let got = tensor(q.clone(), &[b, s, h * d])
                .apply_op3_no_bwd(
                    &tensor(k.clone(), &[b, t, kvh * d]),
                    &tensor(v.clone(), &[b, t, kvh * d]),
                    &op,
                )
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
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
        };
        let r = tensor(q.clone(), &[b, s, h * d]).apply_op3_no_bwd(
            &tensor(k.clone(), &[b, t, kvh * d]),
            &tensor(v.clone(), &[b, t, kvh * d]),
            &op,
        );
        assert!(r.is_err());
    }
}
