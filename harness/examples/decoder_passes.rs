//! Time one causal LM's forward passes at the shapes its accuracy tasks run: a context alone
//! (the output head on its last position, as a shared multiple-choice context runs) and a
//! whole window (the head on every position, as perplexity runs), per `BATCHxLEN` shape:
//!
//!     cargo run --release -p harness --example decoder_passes -- MODEL [--dequantize] [1x1,1x32,1x113]
//!
//! MODEL is a decoder folder or GGUF file; `--dequantize` loads GGUF blocks as f32.
mod common;

use candle_core::Device;
use harness::models::decoder::DecoderBackend;
use harness::models::Backend;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args
        .first()
        .ok_or_else(|| anyhow::anyhow!("usage: decoder_passes MODEL [--dequantize] [SHAPES]"))?;
    let dequantize = args.iter().any(|a| a == "--dequantize");
    let shapes = args
        .iter()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map_or("1x1,1x8,1x32,1x113,8x113", |s| s.as_str());
    let m = DecoderBackend::load(
        "model",
        std::path::Path::new(model),
        &Device::Cpu,
        dequantize,
    )?;
    println!(
        "kernels: {:?}\n\n| batch x len | context pass (last position), ms | tokens/s | window (every position), ms | tokens/s |\n|---|---:|---:|---:|---:|",
        m.info().kernels
    );
    for shape in shapes.split(',') {
        let (b, l) = shape
            .split_once('x')
            .and_then(|(b, l)| Some((b.parse::<usize>().ok()?, l.parse::<usize>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("shape '{shape}' is not BATCHxLEN"))?;
        // Token ids spread over the vocabulary's common range; the work does not depend on them.
        let ids: Vec<u32> = (0..l).map(|i| (i * 7 % 1000) as u32 + 10).collect();
        let context = common::median_ms(5, || {
            for _ in 0..b {
                m.shared_context_loglikelihoods(&ids, &[vec![11]], 1)
                    .unwrap();
            }
        });
        let window = common::median_ms(5, || {
            for _ in 0..b {
                m.window_logits(&ids).unwrap();
            }
        });
        let tps = |ms: f64| (b * l) as f64 / ms * 1e3;
        println!(
            "| {b} x {l} | {context:.1} | {:.0} | {window:.1} | {:.0} |",
            tps(context),
            tps(window)
        );
    }
    Ok(())
}
