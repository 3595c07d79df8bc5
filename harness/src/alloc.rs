//! Allocator settings for inference. Every candle op allocates its output; with glibc's
//! defaults, blocks above a dynamic threshold (128 KiB at first) are fresh `mmap`s, so each
//! op's output is new pages that the kernel faults in and zeroes, and freed heap tops are
//! returned to the system and faulted in again. `perf` showed ~4% of a BERT-base forward in
//! page faults and zeroing alone, plus the allocator's own time (BENCHMARKS.md).
//!
//! [`tune_for_inference`] keeps blocks up to 32 MiB (glibc's ceiling for the threshold) on the
//! heap and never trims it, so the same memory is reused op after op. Measured in alternating
//! runs (`harness profile`, random-weight BERT-base): 1 x 128 from 2.20-2.51 to 2.67-3.06
//! sequences/s, 8 x 128 from 3.03-3.19 to 3.61-3.83. The cost: freed memory stays with the
//! process until it exits, which a short-lived CLI does not mind.

/// Apply the settings (glibc on Linux; elsewhere nothing). Call once, early in `main`.
pub fn tune_for_inference() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any threads
    // start, and a refused setting leaves the default (the return value is not needed).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// Give the heap's free memory back to the system (glibc's `malloc_trim`), after a model is
/// dropped: [`tune_for_inference`] never trims on its own, so without this the next model's
/// resident memory, and so its peak RSS and load figures, would include the last model's
/// freed pages.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; live allocations are
    // untouched.
    unsafe {
        libc::malloc_trim(0);
    }
}
