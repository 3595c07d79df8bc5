//! One packed f32 product timed for a fixed wall time, median and best GFLOP/s (counting
//! 2 x m x k x n): on a VM whose speed drifts from minute to minute, the best of a few
//! hundred calls moves far less than `sgemm_shapes`' median of 31. `scripts/ort-matmul.py`
//! times ONNX Runtime's MatMul the same way, for a side-by-side of one product:
//!
//!     cargo run --release -p harness --example f32_gemm_timing -- 1024 768 3072 [threads] [seconds]
use harness::kernels::sgemm::PackedWeight;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| -> anyhow::Result<String> {
        Ok(args.get(i).cloned().unwrap_or_else(|| default.to_string()))
    };
    let (m, k, n): (usize, usize, usize) = (
        arg(0, "1024")?.parse()?,
        arg(1, "768")?.parse()?,
        arg(2, "3072")?.parse()?,
    );
    let threads: usize = arg(3, "2")?.parse()?;
    let seconds: f64 = arg(4, "2")?.parse()?;
    if !PackedWeight::supported() {
        anyhow::bail!("the packed f32 GEMM needs a CPU with AVX2 and FMA");
    }
    // Deterministic values in [-0.05, 0.05) and [-0.5, 0.5): the time does not depend on them.
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-4)
        .collect();
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 104_729 % 1000) as f32 - 500.0) * 1e-3)
        .collect();
    let packed = PackedWeight::pack(&w, n, k);
    let mut out = vec![0f32; m * n];
    for _ in 0..5 {
        packed.matmul(&x, m, None, &mut out, threads);
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        packed.matmul(&x, m, None, &mut out, threads);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let gflop = 2.0 * (m * k * n) as f64 / 1e9;
    println!(
        "harness {m} x {k} -> {n}, {threads} threads: median {:.1} GFLOP/s, best {:.1} ({} calls)",
        gflop / times[times.len() / 2],
        gflop / times[0],
        times.len()
    );
    Ok(())
}
