//! Language-modelling tasks (the generation issue): sliding-window perplexity and the
//! WikiText raw-file loader. Not yet in the task registry: the run loop still lacks a
//! log-likelihood request kind, which the GPT-2 and Llama backends will answer.

pub mod fidelity;
pub mod perplexity;
pub mod wikitext;
