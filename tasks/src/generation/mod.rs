//! Language-modelling tasks: sliding-window perplexity, the WikiText raw-file loader,
//! token-level fidelity, and the `wikitext2`, `wikitext103` and `generate` task plugins.

pub mod fidelity;
pub mod perplexity;
pub mod tasks;
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
