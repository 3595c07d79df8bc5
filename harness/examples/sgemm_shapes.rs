//! Time the packed f32 GEMM against candle's matmul on one linear layer's shape, per row
//! count and thread count:
//!
//!     cargo run --release -p harness --example sgemm_shapes -- 768 3072 1,6,128,1024
mod common;

use candle_core::{Device, Module, Tensor};
use harness::models::layers::Lin;
use harness::models::sgemm::PackedWeight;

fn main() -> anyhow::Result<()> {
    let (k, n, rows) = common::shape_args("1,6,128,1024")?;
    let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu)?;
    let packed = PackedWeight::pack(&w.flatten_all()?.to_vec1::<f32>()?, n, k);
    let candle = Lin::tied(w, None);
    println!("| rows | candle matmul GFLOP/s | packed, 1 thread | packed, 2 threads |\n|---:|---:|---:|---:|");
    for m in rows {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; m * n];
        let gflops = |ms: f64| 2.0 * (m * k * n) as f64 / ms / 1e6;
        let c = common::median_ms(31, || {
            candle.forward(&x).unwrap();
        });
        let p1 = common::median_ms(31, || packed.matmul(&xs, m, None, &mut out, 1));
        let p2 = common::median_ms(31, || packed.matmul(&xs, m, None, &mut out, 2));
        println!(
            "| {m} | {:.1} | {:.1} | {:.1} |",
            gflops(c),
            gflops(p1),
            gflops(p2)
        );
    }
    Ok(())
}
