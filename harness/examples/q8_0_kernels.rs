//! A/B of the two Q8_0 kernels a host may have: the harness's integer GEMM (`qgemm`, AVX2,
//! activations rounded to Q8_0 blocks: ggml's arithmetic) against candle's `QMatMul` (on
//! hosts with AVX-VNNI or AVX-512 VNNI its repacked `vpdpbusd` tiles, activations rounded to
//! Q8K blocks; elsewhere ggml's dot product). Timings alternate A and B so that the host's
//! drift hits both alike; each figure is the median of `REPS` pairs.
//!
//!     cargo run --release -p harness --example q8_0_kernels -- 768 3072 1,16,32,128,4096
#[allow(dead_code)] // shares the argument parsing only
mod common;

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use harness::kernels::dispatch::{candle_quantized_kernel, candle_x86_level};
use harness::models::linear::Lin;

const REPS: usize = 9;

fn relative_error(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok(
        ((a - b)?.sqr()?.sum_all()?.to_scalar::<f32>()?
            / b.sqr()?.sum_all()?.to_scalar::<f32>()?)
        .sqrt(),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let (k, n, rows) = common::shape_args("1,16,32,128,4096")?;
    eprintln!("candle's x86 tier: {:?}", candle_x86_level());
    let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu)?;
    let mut harness = Lin::new(w.clone(), None);
    harness.quantize(GgmlDType::Q8_0)?;
    let candle = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0)?)?;
    let dense = Lin::new(w, None);
    println!(
        "| k x n | rows | harness kernel | ms | candle kernel | ms | candle / harness time | err harness | err candle |"
    );
    println!("|---|---:|---|---:|---|---:|---:|---:|---:|");
    for m in rows {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let want = dense.forward(&x)?;
        let (a, b) = (harness.forward(&x)?, candle.forward(&x)?);
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        for _ in 0..REPS {
            let s = Instant::now();
            harness.forward(&x)?;
            ta.push(s.elapsed().as_secs_f64() * 1e3);
            let s = Instant::now();
            candle.forward(&x)?;
            tb.push(s.elapsed().as_secs_f64() * 1e3);
        }
        let (ma, mb) = (median(ta), median(tb));
        println!(
            "| {k} x {n} | {m} | {} | {ma:.3} | {} | {mb:.3} | {:.2} | {:.4} | {:.4} |",
            harness.kernel_at(m).name(),
            candle_quantized_kernel(GgmlDType::Q8_0, m, n, k).name(),
            mb / ma,
            relative_error(&a, &want)?,
            relative_error(&b, &want)?,
        );
    }
    Ok(())
}
