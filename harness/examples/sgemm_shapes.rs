//! Time the packed f32 GEMM and the integer GEMM on Q8_0 and Q4_0 blocks against candle's matmul on one
//! linear layer's shape, per row count and thread count (GFLOP/s counts 2 x m x n x k for
//! every format):
//!
//!     cargo run --release -p harness --example sgemm_shapes -- 768 3072 1,6,128,1024
mod common;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Module, Tensor};
use harness::kernels::qgemm::{BlockFormat, Int8Weight};
use harness::kernels::sgemm::{PackedGemm, PackedWeight};
use harness::models::linear::Lin;

fn main() -> anyhow::Result<()> {
    let (k, n, rows) = common::shape_args("1,6,128,1024")?;
    let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu)?;
    let packed = PackedWeight::pack(&w.flatten_all()?.to_vec1::<f32>()?, n, k);
    let q8 = QTensor::quantize(&w, GgmlDType::Q8_0)?;
    let int8 = Int8Weight::from_blocks(BlockFormat::Q8_0, &q8.data()?, n, k)
        .ok_or_else(|| anyhow::anyhow!("the int8 GEMM needs AVX2/FMA and k a multiple of 32"))?;
    let q4 = QTensor::quantize(&w, GgmlDType::Q4_0)?;
    let int4 = Int8Weight::from_blocks(BlockFormat::Q4_0, &q4.data()?, n, k)
        .ok_or_else(|| anyhow::anyhow!("the int8 GEMM needs AVX2/FMA and k a multiple of 32"))?;
    let candle = Lin::tied(w, None);
    println!(
        "| rows | candle matmul GFLOP/s | packed f32, 1 thread | packed f32, 2 threads \
         | int8 Q8_0, 1 thread | int8 Q8_0, 2 threads | Q4_0, 1 thread | Q4_0, 2 threads \
         |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
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
        let q1 = common::median_ms(31, || int8.matmul_then(&xs, m, None, &mut out, 1, None));
        let q2 = common::median_ms(31, || int8.matmul_then(&xs, m, None, &mut out, 2, None));
        let f1 = common::median_ms(31, || int4.matmul_then(&xs, m, None, &mut out, 1, None));
        let f2 = common::median_ms(31, || int4.matmul_then(&xs, m, None, &mut out, 2, None));
        println!(
            "| {m} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            gflops(c),
            gflops(p1),
            gflops(p2),
            gflops(q1),
            gflops(q2),
            gflops(f1),
            gflops(f2)
        );
    }
    Ok(())
}
