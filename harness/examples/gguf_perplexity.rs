//! Sliding-window perplexity of a Llama-family GGUF model (loaded dequantized to f32) on the
//! start of a raw WikiText file: a check of the GGUF path on real weights until the `wikitext2`
//! task is in the run loop.
//!
//!     scripts/fetch-smollm2.sh
//!     cargo run --release -p harness --example gguf_perplexity -- \
//!         target/models/SmolLM2-135M-Instruct-Q4_1 ../shared/data/wikitext-2/wiki.test.raw 4096 512 256

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use tasks::generation::perplexity::{sliding_window_nll, WindowSettings};
use tasks::generation::wikitext::RawText;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(
        args.get(1)
            .context("usage: MODEL_DIR RAW_FILE [TOKENS CONTEXT STRIDE]")?,
    );
    let raw = PathBuf::from(
        args.get(2)
            .context("usage: MODEL_DIR RAW_FILE [TOKENS CONTEXT STRIDE]")?,
    );
    let n_tokens: usize = args.get(3).map_or(Ok(4096), |s| s.parse())?;
    let context: usize = args.get(4).map_or(Ok(512), |s| s.parse())?;
    let stride: usize = args.get(5).map_or(Ok(256), |s| s.parse())?;

    let gguf = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "gguf"))
        .context("no .gguf file in the folder")?;
    let started = std::time::Instant::now();
    let (model, cfg) = harness::models::gguf::load_llama_dequantized(&gguf, &Device::Cpu)?;
    eprintln!(
        "loaded {} ({} layers) in {:.1} s",
        gguf.display(),
        cfg.num_hidden_layers,
        started.elapsed().as_secs_f64()
    );
    let tokenizer =
        tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(anyhow::Error::msg)?;

    // Tokenise the whole text, keep the first n_tokens, and normalise by the words and bytes of
    // exactly the text those tokens cover.
    let text = RawText::read(&raw)?;
    let enc = tokenizer
        .encode(text.text.as_str(), false)
        .map_err(anyhow::Error::msg)?;
    let n = n_tokens.min(enc.len());
    let ids = &enc.get_ids()[..n];
    let covered_end = enc.get_offsets()[n - 1].1;
    let covered = RawText::new(text.text[..covered_end].to_string(), "slice")?;

    let started = std::time::Instant::now();
    let r = sliding_window_nll(ids, WindowSettings { context, stride }, |w| {
        let t =
            Tensor::from_vec(w.to_vec(), (1, w.len()), &Device::Cpu).map_err(|e| e.to_string())?;
        let mask = t.ones_like().map_err(|e| e.to_string())?;
        model
            .forward(&t, &mask)
            .and_then(|l| l.squeeze(0)?.to_vec2::<f32>())
            .map_err(|e| e.to_string())
    })
    .map_err(anyhow::Error::msg)?;
    println!(
        "tokens {} (scored {}), windows {}, context {context}, stride {stride}: token perplexity {:.3}, word perplexity {:.3}, bits per byte {:.4} ({:.1} s)",
        n,
        r.tokens_scored,
        r.windows,
        r.token_perplexity(),
        r.word_perplexity(covered.words),
        r.bits_per_byte(covered.bytes),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
