//! Compute kernels, apart from the architecture ports that call them: the packed f32 GEMM
//! ([`sgemm`]), the integer GEMM for Q8_0 / Q4_0 weights ([`qgemm`]), fused self-attention
//! ([`attention`]), candle custom ops around them (fast GELU, Q8_0 rounding, a packed linear
//! layer: [`ops`]), and [`dispatch`], which names the kernel (the harness's or candle's) that
//! multiplies a weight format on this host.
//! Kernels are chosen at run time by CPU features, never at build time, so one binary serves
//! every x86-64 host.

pub mod attention;
pub mod dispatch;
pub mod isa;
pub mod ops;
pub mod qgemm;
pub mod sgemm;

/// For tests of the x86 kernels: whether this CPU lacks AVX2 and FMA, in which case the test
/// says on stderr that it was skipped (no silent pass) and returns. Every x86-64 host of this
/// project has both, so on them these tests always run; AVX-512 and VNNI change nothing here
/// because the kernels use AVX2 instructions only.
#[cfg(test)]
pub(crate) fn lacks_avx2_fma(test: &str) -> bool {
    let lacks = !sgemm::PackedWeight::supported();
    if lacks {
        eprintln!("skipped: {test}: this CPU has no AVX2/FMA");
    }
    lacks
}
