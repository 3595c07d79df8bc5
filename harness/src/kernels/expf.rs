//! `e^x` for eight f32 values at a time, bit for bit the value glibc's `expf` returns on a
//! CPU with FMA (glibc 2.27 and later: `sysdeps/ieee754/flt-32/e_expf.c`, the variant compiled
//! with `-mfma`, whose contractions are reproduced here as the disassembly of Debian's
//! glibc 2.36 shows them). The decoder's SwiGLU and attention softmax call `expf` once per
//! value (candle's `silu`, the softmax's definition); this gives the same results eight at a
//! time, so moving those loops into vector registers changes no output. (A quantized model
//! re-rounds its activations at every layer, so even a last-bit change in one exponential
//! moved a Q4_1 SmolLM2's log-likelihoods by up to 0.6 nats and flipped near-tie answers.)
//!
//! The algorithm: `x · 32 / ln 2 = k + r` in f64 (`k` an integer, `|r| <= 1/2`), `2^(k/32)`
//! from a 32-entry table and `k`'s high bits put into the exponent, and `2^(r/32)` as a cubic;
//! rounded once to f32 at the end. Checked against `f32::exp` for all 2³² inputs when
//! written (the ignored test below does it again); the default tests check a sample.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `asuint64(2^(i/32)) - (i << 47)`: adding `k << 47` to entry `k mod 32` gives `2^(k/32)`.
/// The entries are 2^(i/32) rounded to the nearest double.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
static TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// `32 / ln 2`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const INV_LN2_32: f64 = f64::from_bits(0x40471547652b82fe);
/// `1.5 · 2^52`: adding it rounds an f64 to an integer held in the low mantissa bits.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const SHIFT: f64 = f64::from_bits(0x4338000000000000);
/// The cubic for `2^(r/32)`: `(C0 r + C1) r² + (C2 r + 1)`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const C: [f64; 3] = [
    f64::from_bits(0x3ebc6af84b912394),
    f64::from_bits(0x3f2ebfce50fac4f3),
    f64::from_bits(0x3f962e42ff0c52d6),
];
/// Above this, `e^x` overflows f32 (`log(2^128)`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const OVERFLOW: f32 = f32::from_bits(0x42b17217);
/// Below this, `e^x` rounds to 0 (`log(2^-150)`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const UNDERFLOW: f32 = f32::from_bits(0xc2cff1b4);

/// Four lanes of the main path, in f64.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn four(x: __m128) -> __m128 {
    let xd = _mm256_cvtps_pd(x);
    let inv = _mm256_set1_pd(INV_LN2_32);
    let shifted = _mm256_fmadd_pd(inv, xd, _mm256_set1_pd(SHIFT));
    let ki = _mm256_castpd_si256(shifted);
    let kd = _mm256_sub_pd(shifted, _mm256_set1_pd(SHIFT));
    let r = _mm256_fmsub_pd(inv, xd, kd);
    let index = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
    let t = _mm256_i64gather_epi64::<8>(TABLE.as_ptr() as *const i64, index);
    let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
    let z = _mm256_fmadd_pd(r, _mm256_set1_pd(C[0]), _mm256_set1_pd(C[1]));
    let r2 = _mm256_mul_pd(r, r);
    let y = _mm256_fmadd_pd(r, _mm256_set1_pd(C[2]), _mm256_set1_pd(1.0));
    let y = _mm256_fmadd_pd(z, r2, y);
    _mm256_cvtpd_ps(_mm256_mul_pd(y, s))
}

/// `e^x` lane by lane, each lane the bits of glibc's `expf(x)` (see the module doc): NaN
/// stays NaN, `-inf` and values below `log(2^-150)` give 0, values above `log(2^128)` `inf`.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn expf_avx2(x: __m256) -> __m256 {
    let y = _mm256_set_m128(
        four(_mm256_extractf128_ps::<1>(x)),
        four(_mm256_castps256_ps128(x)),
    );
    // glibc's slow path, taken from |x| >= 88 (and for NaN): the main path is exact up to
    // the overflow and underflow bounds, which the two comparisons below apply.
    let big = _mm256_cmp_ps::<_CMP_NLT_UQ>(
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), x),
        _mm256_set1_ps(88.0),
    );
    if _mm256_testz_ps(big, big) != 0 {
        return y;
    }
    let over = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(OVERFLOW));
    let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(UNDERFLOW));
    let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
    let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), over);
    let y = _mm256_andnot_ps(under, y);
    // NaN as glibc returns it: `x + x` (quieted, sign and payload kept).
    _mm256_blendv_ps(y, _mm256_add_ps(x, x), nan)
}

#[cfg(test)]
mod tests {
    /// `expf_avx2` on every `step`-th bit pattern (and the patterns around the bounds)
    /// against `f32::exp`, which is glibc's `expf` here: the number that differ.
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn differing(step: usize) -> u64 {
        use std::arch::x86_64::*;
        let specials = [
            super::OVERFLOW,
            super::UNDERFLOW,
            88.0,
            -88.0,
            -103.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            0.0,
            -0.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
        ];
        let near = specials
            .iter()
            .flat_map(|v| (-8i64..=8).map(move |d| (v.to_bits() as i64 + d) as u32));
        let sampled = (0..=u32::MAX).step_by(step);
        let mut values = near.chain(sampled).map(f32::from_bits);
        let mut bad = 0u64;
        loop {
            let mut lanes = [0f32; 8];
            let mut n = 0;
            for (lane, x) in lanes.iter_mut().zip(values.by_ref()) {
                *lane = x;
                n += 1;
            }
            if n == 0 {
                break;
            }
            let mut got = [0f32; 8];
            // SAFETY: the caller checked the features.
            unsafe {
                let v = super::expf_avx2(_mm256_loadu_ps(lanes.as_ptr()));
                _mm256_storeu_ps(got.as_mut_ptr(), v);
            }
            for (&x, &g) in lanes[..n].iter().zip(&got) {
                let want = std::hint::black_box(x).exp();
                let same = g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan());
                if !same {
                    if bad < 5 {
                        eprintln!("expf({x:e} = {:#x}): {g:e}, glibc {want:e}", x.to_bits());
                    }
                    bad += 1;
                }
            }
        }
        bad
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn has_features(test: &str) -> bool {
        let has = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        !crate::kernels::isa::skip(test, "avx2+fma", has)
    }

    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn expf_avx2_gives_glibcs_bits_on_a_sample() {
        if has_features("expf_avx2_gives_glibcs_bits_on_a_sample") {
            // About 1.7 million values, every exponent and sign.
            assert_eq!(differing(2503), 0);
        }
    }

    /// All 2³² inputs (about a minute in a release build):
    /// `cargo test --release -p harness --lib expf -- --ignored`.
    #[test]
    #[ignore]
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn expf_avx2_gives_glibcs_bits_everywhere() {
        if has_features("expf_avx2_gives_glibcs_bits_everywhere") {
            assert_eq!(differing(1), 0);
        }
    }
}
