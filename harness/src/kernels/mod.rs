//! Compute kernels, apart from the architecture ports that call them: the packed f32 GEMM
//! ([`sgemm`]), the integer GEMM for Q8_0 / Q4_0 / Q4_1 weights ([`qgemm`]), fused self-attention
//! ([`attention`]), candle custom ops around them (fast GELU, Q8_0 rounding, a packed linear
//! layer, masked mean pooling: [`ops`]), and [`dispatch`], which names the kernel (the
//! harness's or candle's) that multiplies a weight format on this host.
//! Kernels are chosen at run time by CPU features, never at build time, so one binary serves
//! every x86-64 host.

pub mod attention;
pub mod decoder_ops;
pub mod dispatch;
pub(crate) mod expf;
pub mod isa;
pub mod norm;
pub mod ops;
pub mod pool;
pub mod qgemm;
pub mod sgemm;
pub mod tanhf;

/// Check the kernels' environment settings (`HARNESS_KERNELS`, `HARNESS_POOL`) up front, so a
/// bad value is a clear error before any work rather than a panic at the first product.
pub fn check_env() -> Result<(), String> {
    isa::check_env()?;
    pool::check_env()
}

/// The bit patterns of `v`: what the kernels' tests compare where results must be the same
/// bits, not merely close (the sign of zero included).
#[cfg(test)]
pub(crate) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A buffer of `len` values to be written before they are read: the kernels' outputs and
/// scratch as large as their inputs, which zero-filling first would cost a whole extra pass
/// over memory (a `memset` of 2% of a Q8_0 pass).
pub(crate) fn unwritten<T>(len: usize) -> Vec<std::mem::MaybeUninit<T>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` needs no initialisation, and the capacity is there.
    unsafe { v.set_len(len) };
    v
}

/// `v` once every element has been written.
///
/// # Safety
/// Every element of `v` must be initialised.
pub(crate) unsafe fn written<T>(v: Vec<std::mem::MaybeUninit<T>>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, length and capacity; `MaybeUninit<T>` has `T`'s layout, and the
    // caller promises every element is initialised.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
}
