//! Compute kernels, apart from the architecture ports that call them: the packed f32 GEMM
//! ([`sgemm`]), the integer GEMM for Q8_0 / Q4_0 / Q4_1 weights ([`qgemm`]), fused self-attention
//! ([`attention`]), candle custom ops around them (fast GELU, Q8_0 rounding, a packed linear
//! layer: [`ops`]), and [`dispatch`], which names the kernel (the harness's or candle's) that
//! multiplies a weight format on this host.
//! Kernels are chosen at run time by CPU features, never at build time, so one binary serves
//! every x86-64 host.

pub mod attention;
pub mod decoder_ops;
pub mod dispatch;
pub mod isa;
pub mod norm;
pub mod ops;
pub mod pool;
pub mod qgemm;
pub mod sgemm;

/// Check the kernels' environment settings (`HARNESS_KERNELS`, `HARNESS_POOL`) up front, so a
/// bad value is a clear error before any work rather than a panic at the first product.
pub fn check_env() -> Result<(), String> {
    isa::check_env()?;
    pool::check_env()
}
