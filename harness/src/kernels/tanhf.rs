//! `tanh` for eight f32 values at a time, bit for bit the value glibc's `tanhf` returns, and
//! with it candle's tanh-approximation GELU (`gelu_new`, GPT-2's activation) as one custom op.
//!
//! candle's `gelu` calls libm's `tanhf` once per value on one thread: 21% of a GPT-2
//! perplexity pass. glibc's `tanhf` is fdlibm's (`sysdeps/ieee754/flt-32/s_tanhf.c`: `tanh(x)
//! = 1 - 2 / (expm1(2|x|) + 2)` from 1 on, `-expm1(-2|x|) / (expm1(-2|x|) + 2)` below) over
//! fdlibm's `expm1f` (`s_expm1f.c`: `x = k ln 2 + r` in two parts, a rational approximation
//! of `expm1(r)`, then one of seven reconstructions by `k`), compiled without FMA. Here every
//! lane takes every path and the right one is blended in, the same f32 operations in the same
//! order, so the bits are glibc's: checked against `f32::tanh` for all 2³² inputs when
//! written (the ignored test below does it again; a sample runs by default).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use candle_core::Result;

/// `tanh` with `f32::tanh`'s bits, through [`tanhf_avx2`] where the CPU has AVX2.
#[cfg(test)]
fn tanh_slice(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just checked.
        return unsafe { map_avx2(xs, |v| tanhf_avx2(v), f32::tanh) };
    }
    for x in xs {
        *x = x.tanh();
    }
}

/// candle's `gelu` for f32, operation for operation:
/// `0.5 v (1 + tanh(sqrt(2/pi) v (1 + 0.044715 v²)))`.
fn gelu_tanh(v: f32) -> f32 {
    0.5 * v * (1.0 + f32::tanh(SQRT_TWO_OVER_PI * v * (1.0 + 0.044715 * v * v)))
}

/// candle's constant (`candle_core::op`), rounded to f32 as it is there.
const SQRT_TWO_OVER_PI: f32 = 0.797_884_560_802_865_4_f64 as f32;

/// [`gelu_tanh`] over a slice: `dst[i] = gelu_tanh(src[i])`.
fn gelu_tanh_slice(src: &[f32], dst: &mut [f32]) {
    dst.copy_from_slice(src);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just checked.
        return unsafe { map_avx2(dst, |v| gelu_tanh_avx2(v), gelu_tanh) };
    }
    for x in dst {
        *x = gelu_tanh(*x);
    }
}

/// `f` over `xs` eight at a time in place, the values past the last multiple of eight through
/// `scalar` (which gives the same bits).
///
/// # Safety
/// The CPU must have AVX2, and `f` may need no more.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn map_avx2(xs: &mut [f32], f: impl Fn(__m256) -> __m256, scalar: fn(f32) -> f32) {
    let full = xs.len() / 8 * 8;
    let p = xs.as_mut_ptr();
    for i in (0..full).step_by(8) {
        _mm256_storeu_ps(p.add(i), f(_mm256_loadu_ps(p.add(i))));
    }
    for x in &mut xs[full..] {
        *x = scalar(*x);
    }
}

/// [`gelu_tanh`] on eight values.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn gelu_tanh_avx2(v: __m256) -> __m256 {
    let set = _mm256_set1_ps;
    let inner = _mm256_add_ps(set(1.0), _mm256_mul_ps(_mm256_mul_ps(set(0.044715), v), v));
    let u = _mm256_mul_ps(_mm256_mul_ps(set(SQRT_TWO_OVER_PI), v), inner);
    _mm256_mul_ps(
        _mm256_mul_ps(set(0.5), v),
        _mm256_add_ps(set(1.0), tanhf_avx2(u)),
    )
}

/// fdlibm's `expm1f` on eight finite values of magnitude below 88 (the range `tanhf` calls
/// it on: `±2|x|` with `|x| < 22`).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn expm1f_avx2(x: __m256) -> __m256 {
    let set = _mm256_set1_ps;
    let bits = |v: __m256| _mm256_castps_si256(v);
    let float = |v: __m256i| _mm256_castsi256_ps(v);
    let (ln2_hi, ln2_lo) = (
        set(f32::from_bits(0x3f317180)),
        set(f32::from_bits(0x3717f7d1)),
    );
    let hx = _mm256_and_si256(bits(x), _mm256_set1_epi32(0x7fff_ffff));
    let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_setzero_ps());
    let above = |limit: i32| _mm256_cmpgt_epi32(hx, _mm256_set1_epi32(limit));
    // Argument reduction: |x| <= ln 2 / 2 keeps x (k = 0); below 1.5 ln 2, k = ±1; else k
    // from x / ln 2 (rounded half away by truncating x / ln 2 ± 1/2).
    let reduce = above(0x3eb1_7218);
    let general = above(0x3F85_1591);
    let half = _mm256_blendv_ps(set(0.5), set(-0.5), neg);
    let k_general = _mm256_cvttps_epi32(_mm256_add_ps(
        _mm256_mul_ps(set(f32::from_bits(0x3fb8aa3b)), x),
        half,
    ));
    let one_i = _mm256_blendv_epi8(
        _mm256_set1_epi32(1),
        _mm256_set1_epi32(-1),
        _mm256_castps_si256(neg),
    );
    let k = _mm256_and_si256(_mm256_blendv_epi8(one_i, k_general, general), reduce);
    let tk = _mm256_cvtepi32_ps(k);
    // k = ±1: hi = x ∓ ln2_hi, lo = ±ln2_lo; general: hi = x - t ln2_hi, lo = t ln2_lo.
    let hi_one = _mm256_blendv_ps(_mm256_sub_ps(x, ln2_hi), _mm256_add_ps(x, ln2_hi), neg);
    let lo_one = _mm256_blendv_ps(ln2_lo, _mm256_xor_ps(ln2_lo, set(-0.0)), neg);
    let hi_gen = _mm256_sub_ps(x, _mm256_mul_ps(tk, ln2_hi));
    let lo_gen = _mm256_mul_ps(tk, ln2_lo);
    let gen_f = float(general);
    let hi = _mm256_blendv_ps(hi_one, hi_gen, gen_f);
    let lo = _mm256_blendv_ps(lo_one, lo_gen, gen_f);
    let xr = _mm256_sub_ps(hi, lo);
    let c = _mm256_sub_ps(_mm256_sub_ps(hi, xr), lo);
    let red_f = float(reduce);
    let x = _mm256_blendv_ps(x, xr, red_f);
    let c = _mm256_and_ps(c, red_f);
    // The rational approximation.
    let q = [
        0xbd088889u32,
        0x3ad00d01,
        0xb8a670cd,
        0x36867e54,
        0xb457edbb,
    ]
    .map(f32::from_bits);
    let hfx = _mm256_mul_ps(set(0.5), x);
    let hxs = _mm256_mul_ps(x, hfx);
    let mut p = _mm256_mul_ps(hxs, set(q[4]));
    for &qi in q[..4].iter().rev() {
        p = _mm256_mul_ps(hxs, _mm256_add_ps(set(qi), p));
    }
    let r1 = _mm256_add_ps(set(1.0), p);
    let t = _mm256_sub_ps(set(3.0), _mm256_mul_ps(r1, hfx));
    let e = _mm256_mul_ps(
        hxs,
        _mm256_div_ps(
            _mm256_sub_ps(r1, t),
            _mm256_sub_ps(set(6.0), _mm256_mul_ps(x, t)),
        ),
    );
    // k = 0.
    let r_zero = _mm256_sub_ps(x, _mm256_sub_ps(_mm256_mul_ps(x, e), hxs));
    // Every other k.
    let e = _mm256_sub_ps(_mm256_sub_ps(_mm256_mul_ps(x, _mm256_sub_ps(e, c)), c), hxs);
    let r_minus_one = _mm256_sub_ps(_mm256_mul_ps(set(0.5), _mm256_sub_ps(x, e)), set(0.5));
    let r_one = _mm256_blendv_ps(
        _mm256_add_ps(set(1.0), _mm256_mul_ps(set(2.0), _mm256_sub_ps(x, e))),
        _mm256_mul_ps(set(-2.0), _mm256_sub_ps(e, _mm256_add_ps(x, set(0.5)))),
        _mm256_cmp_ps::<_CMP_LT_OQ>(x, set(-0.25)),
    );
    let scale = |y: __m256| float(_mm256_add_epi32(bits(y), _mm256_slli_epi32::<23>(k)));
    let r_far = _mm256_sub_ps(
        scale(_mm256_sub_ps(set(1.0), _mm256_sub_ps(e, x))),
        set(1.0),
    );
    let t_near = float(_mm256_sub_epi32(
        _mm256_set1_epi32(0x3f80_0000),
        _mm256_srlv_epi32(_mm256_set1_epi32(0x100_0000), k),
    ));
    let r_near = scale(_mm256_sub_ps(t_near, _mm256_sub_ps(e, x)));
    let t_mid = float(_mm256_slli_epi32::<23>(_mm256_sub_epi32(
        _mm256_set1_epi32(0x7f),
        k,
    )));
    let r_mid = scale(_mm256_add_ps(
        _mm256_sub_ps(x, _mm256_add_ps(e, t_mid)),
        set(1.0),
    ));
    let is = |v: i32| float(_mm256_cmpeq_epi32(k, _mm256_set1_epi32(v)));
    let k_gt = |v: i32| float(_mm256_cmpgt_epi32(k, _mm256_set1_epi32(v)));
    // k <= -2 or k > 56: far; 2 <= k < 23: near; 23 <= k <= 56: mid.
    let mut r = r_far;
    r = _mm256_blendv_ps(r, r_mid, _mm256_andnot_ps(k_gt(56), k_gt(22)));
    r = _mm256_blendv_ps(r, r_near, _mm256_andnot_ps(k_gt(22), k_gt(1)));
    r = _mm256_blendv_ps(r, r_one, is(1));
    r = _mm256_blendv_ps(r, r_minus_one, is(-1));
    r = _mm256_blendv_ps(r, r_zero, is(0));
    // |x| < 2^-25: x itself.
    let tiny = float(_mm256_cmpgt_epi32(_mm256_set1_epi32(0x3300_0000), hx));
    _mm256_blendv_ps(r, float(bits(x)), tiny)
}

/// glibc's `tanhf` on eight values (NaN in, NaN out).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn tanhf_avx2(x: __m256) -> __m256 {
    let set = _mm256_set1_ps;
    let sign = set(-0.0);
    let a = _mm256_andnot_ps(sign, x);
    let ia = _mm256_castps_si256(a);
    let large = _mm256_cmp_ps::<_CMP_GE_OQ>(a, set(1.0));
    // Below 22 (in its range): expm1(2|x|) from 1 on, expm1(-2|x|) below.
    let two_a = _mm256_mul_ps(set(2.0), a);
    let arg = _mm256_blendv_ps(_mm256_xor_ps(two_a, sign), two_a, large);
    let in_range = _mm256_cmp_ps::<_CMP_LT_OQ>(a, set(22.0));
    let t = expm1f_avx2(_mm256_and_ps(arg, in_range));
    let t2 = _mm256_add_ps(t, set(2.0));
    let z_large = _mm256_sub_ps(set(1.0), _mm256_div_ps(set(2.0), t2));
    let z_small = _mm256_div_ps(_mm256_xor_ps(t, sign), t2);
    let z = _mm256_blendv_ps(z_small, z_large, large);
    // From 22 on (infinity too): 1.
    let z = _mm256_blendv_ps(set(1.0), z, in_range);
    let z = _mm256_or_ps(z, _mm256_and_ps(x, sign));
    // Below 2^-55 (zero included): x itself; NaN: NaN.
    let tiny = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(0x2400_0000), ia));
    let z = _mm256_blendv_ps(z, x, tiny);
    let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
    _mm256_blendv_ps(z, _mm256_add_ps(x, x), nan)
}

/// candle's tanh-approximation GELU (`x.gelu()`, the `gelu_new` of GPT-2) as a custom op on
/// the CPU: the same bits, eight values at a time where the CPU has AVX2, split over the
/// kernels' pool.
pub struct GeluTanh;

impl candle_core::CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        // Chunks of 32K values: a small tensor is one chunk, on one thread.
        super::ops::map_chunks_parallel(storage, layout, self.name(), 1 << 15, gelu_tanh_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bits;

    /// `tanh_slice` and `gelu_tanh_slice` on every `step`-th bit pattern (and on the patterns
    /// around their branch points) against `f32::tanh` (glibc's `tanhf`) and candle's
    /// formula: how many differ.
    fn differing(step: usize) -> (u64, u64) {
        let edges = [
            0.0f32,
            1.0,
            22.0,
            0.346_573_6,
            1.039_720_8,
            9.0,
            11.5,
            19.4,
            40.0,
            88.0,
            f32::INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            1e-17,
            3e-8,
        ];
        let near = edges.iter().flat_map(|v| {
            (-16i64..=16).flat_map(move |d| {
                let b = (v.to_bits() as i64 + d) as u32;
                [b, b | 0x8000_0000]
            })
        });
        let mut values = near.chain((0..=u32::MAX).step_by(step)).map(f32::from_bits);
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        let mut bad = (0u64, 0u64);
        loop {
            let chunk: Vec<f32> = values.by_ref().take(4096).collect();
            if chunk.is_empty() {
                break;
            }
            let mut t = chunk.clone();
            tanh_slice(&mut t);
            let mut g = vec![0f32; chunk.len()];
            gelu_tanh_slice(&chunk, &mut g);
            for ((&x, &t), &g) in chunk.iter().zip(&t).zip(&g) {
                let x = std::hint::black_box(x);
                if !same(t, x.tanh()) {
                    if bad.0 < 5 {
                        eprintln!(
                            "tanh({x:e} = {:#x}): {t:e}, glibc {:e}",
                            x.to_bits(),
                            x.tanh()
                        );
                    }
                    bad.0 += 1;
                }
                if !same(g, gelu_tanh(x)) {
                    bad.1 += 1;
                }
            }
        }
        bad
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn tanh_and_gelu_give_glibcs_and_candles_bits_on_a_sample() {
        // About 1.7 million values, every exponent and sign (on CPUs without AVX2 the scalar
        // loops are compared with themselves).
        assert_eq!(differing(2503), (0, 0));
    }

    /// All 2³² inputs (about a minute in a release build):
    /// `cargo test --release -p harness --lib tanhf -- --ignored`.
    #[test]
    #[ignore]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn tanh_and_gelu_give_glibcs_and_candles_bits_everywhere() {
        assert_eq!(differing(1), (0, 0));
    }

    #[test]
    fn the_op_is_candles_gelu() {
        let dev = candle_core::Device::Cpu;
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0173).collect();
        let t = candle_core::Tensor::from_vec(x, (10, 100), &dev).unwrap();
        let want = t
            .gelu()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = t.apply_op1_no_bwd(&GeluTanh).unwrap();
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(bits(&got), bits(&want));
    }
}
