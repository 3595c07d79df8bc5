//! Time one linear layer `(rows, k) x (n, k)^T` in f32 and in each GGUF block format, through
//! the harness's `Lin` (candle's quantized kernels, or dequantized blocks for many rows):
//!
//!     cargo run --release -p harness --example quant_matmul -- 768 3072 1,128,4096
mod common;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Module, Tensor};
use harness::models::linear::Lin;

fn main() -> anyhow::Result<()> {
    let (k, n, rows) = common::shape_args("1,128,4096")?;
    let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu)?;
    println!("| rows | format | ms | GFLOP/s | rel. error vs f32 |\n|---:|---|---:|---:|---:|");
    for m in rows {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let dense = Lin::new(w.clone(), None);
        let want = dense.forward(&x)?;
        // candle's own f32 matmul (the layout `Lin::tied` keeps) next to the packed GEMM.
        let candle = Lin::tied(w.clone(), None);
        let ms = common::median_ms(7, || {
            candle.forward(&x).unwrap();
        });
        println!(
            "| {m} | f32 (candle matmul) | {ms:.3} | {:.1} | - |",
            2.0 * (m * k * n) as f64 / ms / 1e6
        );
        for fmt in [
            None,
            Some(GgmlDType::Q8_0),
            Some(GgmlDType::Q4_0),
            Some(GgmlDType::Q4_1),
            Some(GgmlDType::Q4K),
            Some(GgmlDType::Q6K),
        ] {
            let mut l = Lin::new(w.clone(), None);
            if let Some(f) = fmt {
                l.quantize(f)?;
            }
            let got = l.forward(&x)?;
            let err = ((&got - &want)?.sqr()?.sum_all()?.to_scalar::<f32>()?
                / want.sqr()?.sum_all()?.to_scalar::<f32>()?)
            .sqrt();
            let ms = common::median_ms(7, || {
                l.forward(&x).unwrap();
            });
            println!(
                "| {m} | {} | {ms:.3} | {:.1} | {err:.4} |",
                fmt.map_or("f32 (packed)".to_string(), |f| format!("{f:?}")),
                2.0 * (m * k * n) as f64 / ms / 1e6
            );
        }
    }
    Ok(())
}
