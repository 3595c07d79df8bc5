//! Model backends. A [`Backend`] answers [`tasks::request`] requests (logits, pooled
//! embeddings, log-likelihoods, generations); the run loop never sees tensors.
//!
//! - [`encoder::EncoderBackend`] runs the encoder ports (`bert.rs`, `distilbert.rs`,
//!   `mpnet.rs`, each behind [`encoder::EncoderNet`]); [`decoder::DecoderBackend`] the causal
//!   LMs (`gpt2.rs`, `llama.rs`, GGUF files through `gguf.rs`); [`mock::MockBackend`] answers
//!   without weights, for tests of the orchestration.
//! - [`linear`] is the linear layer with its weight formats and quantization; [`nn`] the
//!   building blocks (attention, KV cache, masks, pooling); [`checkpoint`] the files of a
//!   checkpoint; [`resolve`] aliases, local folders and the Hub. The kernels themselves live
//!   in [`crate::kernels`].

pub mod backend;
pub mod bert;
pub mod checkpoint;
pub mod decoder;
pub mod distilbert;
pub mod encoder;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod gpt2;
pub mod linear;
pub mod llama;
pub mod loader;
pub mod mock;
pub mod mpnet;
pub mod nn;
pub mod resolve;
pub mod rope;
pub mod tokenizer;

pub use backend::Backend;
pub(crate) use checkpoint::{canonical, check_tokenizer_fits, open_weights, OpenedWeights};
pub use checkpoint::{find_weights, read_json, WeightFile};
pub use encoder::{EncoderArch, EncoderBackend, EncoderNet, LoadOptions, Pooling, ENCODERS};
pub use tasks::request::{Batched, TextInput};
