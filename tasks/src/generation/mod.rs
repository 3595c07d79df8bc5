//! Language-modelling tasks: sliding-window perplexity, the WikiText raw-file loader,
//! token-level fidelity, and the `wikitext2`, `wikitext103` and `generate` task plugins.

pub mod fidelity;
pub mod perplexity;
pub mod tasks;
pub mod wikitext;
