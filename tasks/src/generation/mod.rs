//! Language-modelling tasks (the generation issue): sliding-window perplexity and the
//! WikiText raw-file loader. Not yet in the task registry: the run loop still lacks a
//! log-likelihood request kind, which the GPT-2 and Llama backends will answer.

pub mod fidelity;
pub mod perplexity;
pub mod wikitext;

/// log(sum(exp(logits))), computed stably in f64: the normaliser of a log-softmax.
pub(crate) fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max
}
