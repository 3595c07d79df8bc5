//! Time the packed f32 GEMM against candle's matmul on one linear layer's shape, per row
//! count and thread count:
//!
//!     cargo run --release -p harness --example sgemm_shapes -- 768 3072 1,6,128,1024
use std::time::Instant;

use candle_core::{Device, Module, Tensor};
use harness::models::layers::Lin;
use harness::models::sgemm::PackedWeight;

fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..31)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[15]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let k: usize = args.get(1).map_or(Ok(768), |s| s.parse())?;
    let n: usize = args.get(2).map_or(Ok(3072), |s| s.parse())?;
    let rows: Vec<usize> = args
        .get(3)
        .map_or("1,6,128,1024".to_string(), |s| s.clone())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu)?;
    let packed = PackedWeight::pack(&w.flatten_all()?.to_vec1::<f32>()?, n, k);
    let candle = Lin::tied(w, None);
    println!("| rows | candle matmul GFLOP/s | packed, 1 thread | packed, 2 threads |\n|---:|---:|---:|---:|");
    for m in rows {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; m * n];
        let gflops = |ms: f64| 2.0 * (m * k * n) as f64 / ms / 1e6;
        let c = median_ms(|| {
            candle.forward(&x).unwrap();
        });
        let p1 = median_ms(|| packed.matmul(&xs, m, None, &mut out, 1));
        let p2 = median_ms(|| packed.matmul(&xs, m, None, &mut out, 2));
        println!(
            "| {m} | {:.1} | {:.1} | {:.1} |",
            gflops(c),
            gflops(p1),
            gflops(p2)
        );
    }
    Ok(())
}
