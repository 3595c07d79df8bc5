//! How fast can an AVX2 integer kernel multiply on this host? Three 6 x 16 tile loops over
//! L1-resident data, one core, each step what a real kernel issues (issue 16, Q8_0 against
//! ONNX Runtime's int8):
//!
//! - `i16`: the harness's Q8_0 kernel (`qgemm::kernel`): weights sign-extended to i16, pairs
//!   of activations broadcast, `vpmaddwd` + `vpaddd`: exact for any Q8_0 values;
//! - `sign`: the exact byte form: `vpabsb` of the activations, `vpsignb` of the weights by
//!   them, `vpmaddubsw` + `vpmaddwd` by ones + `vpaddd` (pairwise sums stay under 2^15 since
//!   both sides are within [-127, 127]);
//! - `u8 x s8`: MLAS's AVX2 form (`vpmaddubsw` on unsigned activations, then `vpmaddwd` by
//!   ones): its pairwise i16 sums saturate for large activations and weights, so it is not
//!   Q8_0's arithmetic; shown as the ceiling ONNX Runtime's int8 model works against.
//!
//! Multiply-accumulates per second (GMAC/s), three repeats:
//!
//!     cargo run --release -p harness --example int8_step_ceiling
#[cfg(target_arch = "x86_64")]
mod kernels {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn k_i16(w: &[i8], q: &[i16], reps: usize) -> __m256i {
        let mut sums = [[_mm256_setzero_si256(); 2]; 6];
        for _ in 0..reps {
            // Opaque each round, so no load is hoisted out of the repeats.
            let (w, q) = std::hint::black_box((w, q));
            for step in 0..16 {
                let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(
                    w.as_ptr().add(step * 32) as *const __m128i
                ));
                let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(
                    w.as_ptr().add(step * 32 + 16) as *const __m128i
                ));
                for (i, sum) in sums.iter_mut().enumerate() {
                    let b = _mm256_set1_epi32(std::ptr::read_unaligned(
                        q.as_ptr().add(i * 64 + step * 2) as *const i32,
                    ));
                    sum[0] = _mm256_add_epi32(sum[0], _mm256_madd_epi16(w0, b));
                    sum[1] = _mm256_add_epi32(sum[1], _mm256_madd_epi16(w1, b));
                }
            }
        }
        let mut t = _mm256_setzero_si256();
        for s in sums {
            t = _mm256_add_epi32(t, _mm256_add_epi32(s[0], s[1]));
        }
        t
    }

    /// The byte steps: `EXACT` takes the signs off the activations onto the weights first
    /// (`vpabsb`, `vpsignb`), else the activations go in as unsigned bytes (MLAS).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn k_bytes<const EXACT: bool>(w: &[i8], q: &[i8], reps: usize) -> __m256i {
        let ones = _mm256_set1_epi16(1);
        let mut sums = [[_mm256_setzero_si256(); 2]; 6];
        for _ in 0..reps {
            // Opaque each round, so no load is hoisted out of the repeats.
            let (w, q) = std::hint::black_box((w, q));
            for step in 0..8 {
                let w0 = _mm256_loadu_si256(w.as_ptr().add(step * 64) as *const __m256i);
                let w1 = _mm256_loadu_si256(w.as_ptr().add(step * 64 + 32) as *const __m256i);
                for (i, sum) in sums.iter_mut().enumerate() {
                    let b = _mm256_set1_epi32(std::ptr::read_unaligned(
                        q.as_ptr().add(i * 64 + step * 4) as *const i32,
                    ));
                    let (a, w0, w1) = if EXACT {
                        let a = _mm256_abs_epi8(b);
                        (a, _mm256_sign_epi8(w0, b), _mm256_sign_epi8(w1, b))
                    } else {
                        (b, w0, w1)
                    };
                    sum[0] = _mm256_add_epi32(
                        sum[0],
                        _mm256_madd_epi16(_mm256_maddubs_epi16(a, w0), ones),
                    );
                    sum[1] = _mm256_add_epi32(
                        sum[1],
                        _mm256_madd_epi16(_mm256_maddubs_epi16(a, w1), ones),
                    );
                }
            }
        }
        let mut t = _mm256_setzero_si256();
        for s in sums {
            t = _mm256_add_epi32(t, _mm256_add_epi32(s[0], s[1]));
        }
        t
    }
}

#[cfg(target_arch = "x86_64")]
fn main() {
    use kernels::*;
    use std::time::Instant;
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        eprintln!("skipped: this CPU lacks AVX2/FMA");
        return;
    }
    let w: Vec<i8> = (0..512).map(|i| (i % 7) as i8 - 3).collect();
    let q16: Vec<i16> = (0..512).map(|i| (i % 5) as i16 - 2).collect();
    let q8: Vec<i8> = (0..512).map(|i| (i % 5) as i8 - 2).collect();
    let reps = 5_000_000;
    let macs = (reps * 16 * 192) as f64;
    let rate = |f: &dyn Fn() -> std::arch::x86_64::__m256i| {
        let t = Instant::now();
        std::hint::black_box(f());
        macs / t.elapsed().as_secs_f64() / 1e9
    };
    for _ in 0..3 {
        // SAFETY: AVX2 and FMA were checked above; every load is within the 512 values.
        let (a, b, c) = unsafe {
            (
                rate(&|| k_i16(&w, &q16, reps)),
                rate(&|| k_bytes::<true>(&w, &q8, reps)),
                rate(&|| k_bytes::<false>(&w, &q8, reps)),
            )
        };
        println!(
            "i16 (Q8_0 kernel) {a:.1}  sign (exact bytes) {b:.1}  u8 x s8 (MLAS) {c:.1} GMAC/s"
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("skipped: x86-64 only");
}
