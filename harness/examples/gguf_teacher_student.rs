//! A GGUF model as teacher (loaded dequantized to f32) against the same file as student (kept
//! quantized, candle's quantized kernels) on the start of a raw WikiText file: sliding-window
//! perplexity of each, and token-level fidelity (mean KL(teacher || student), top-1 agreement).
//! A check of the decoder groundwork on real weights until the `wikitext2` task is in the run
//! loop.
//!
//!     scripts/fetch-smollm2.sh
//!     cargo run --release -p harness --example gguf_teacher_student -- \
//!         target/models/SmolLM2-135M-Instruct-Q4_1 ../shared/data/wikitext-2/wiki.test.raw 2048 512 256

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use harness::models::llama::Llama;
use tasks::generation::fidelity::TokenFidelity;
use tasks::generation::perplexity::{sliding_window_nll, WindowSettings};
use tasks::generation::wikitext::RawText;

fn logits(model: &Llama, window: &[u32]) -> Result<Vec<Vec<f32>>, String> {
    let t = Tensor::from_vec(window.to_vec(), (1, window.len()), &Device::Cpu)
        .map_err(|e| e.to_string())?;
    let mask = t.ones_like().map_err(|e| e.to_string())?;
    model
        .forward(&t, &mask)
        .and_then(|l| l.squeeze(0)?.to_vec2::<f32>())
        .map_err(|e| e.to_string())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: MODEL_DIR RAW_FILE [TOKENS CONTEXT STRIDE]";
    let dir = PathBuf::from(args.get(1).context(usage)?);
    let raw = PathBuf::from(args.get(2).context(usage)?);
    let n_tokens: usize = args.get(3).map_or(Ok(2048), |s| s.parse())?;
    let context: usize = args.get(4).map_or(Ok(512), |s| s.parse())?;
    let stride: usize = args.get(5).map_or(Ok(256), |s| s.parse())?;

    let gguf = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "gguf"))
        .context("no .gguf file in the folder")?;
    let (teacher, cfg) = harness::models::gguf::load_llama_dequantized(&gguf, &Device::Cpu)?;
    let (student, _) = harness::models::gguf::load_llama_quantized(&gguf, &Device::Cpu)?;
    eprintln!(
        "{}: {} layers, teacher dequantized to f32, student quantized",
        gguf.display(),
        cfg.num_hidden_layers
    );
    let tokenizer =
        tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(anyhow::Error::msg)?;

    // The first n_tokens of the text; words and bytes of exactly the text they cover.
    let text = RawText::read(&raw)?;
    let enc = tokenizer
        .encode(text.text.as_str(), false)
        .map_err(anyhow::Error::msg)?;
    let n = n_tokens.min(enc.len());
    let ids = &enc.get_ids()[..n];
    let covered = RawText::new(text.text[..enc.get_offsets()[n - 1].1].to_string(), "slice")?;

    let w = WindowSettings { context, stride };
    for (role, model) in [
        ("teacher (f32)", &teacher),
        ("student (quantized)", &student),
    ] {
        let started = Instant::now();
        let r = sliding_window_nll(ids, w, |win| logits(model, win)).map_err(anyhow::Error::msg)?;
        println!(
            "{role}: token perplexity {:.3}, word perplexity {:.3}, bits per byte {:.4}; {} tokens scored in {} windows, {:.1} s",
            r.token_perplexity(),
            r.word_perplexity(covered.words),
            r.bits_per_byte(covered.bytes),
            r.tokens_scored,
            r.windows,
            started.elapsed().as_secs_f64()
        );
    }
    // Fidelity over disjoint windows, every position once.
    let mut f = TokenFidelity::default();
    for chunk in ids.chunks(context) {
        let (t, s) = (
            logits(&teacher, chunk).map_err(anyhow::Error::msg)?,
            logits(&student, chunk).map_err(anyhow::Error::msg)?,
        );
        for (a, b) in t.iter().zip(&s) {
            f.add(a, b).map_err(anyhow::Error::msg)?;
        }
    }
    println!(
        "fidelity over {} positions: mean KL(teacher || student) {:.5} nats, top-1 agreement {:.2}%",
        f.positions,
        f.mean_kl(),
        f.top1_agreement() * 100.0
    );
    Ok(())
}
