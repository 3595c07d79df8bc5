//! A backend that needs no weights: deterministic outputs derived from the text, so the run
//! loop, label mapping and result writing can be tested without loading a model.

use anyhow::{bail, Result};
use reports::CheckpointInfo;

use super::{Backend, Batched, TextInput};

/// Embeddings are letter counts (so similar texts get similar vectors); logits favour label
/// `len(text) % labels`.
pub struct MockBackend {
    info: CheckpointInfo,
    labels: Option<Vec<String>>,
}

impl MockBackend {
    pub fn new(id: &str, labels: Option<Vec<String>>) -> Self {
        MockBackend {
            info: CheckpointInfo {
                id: id.into(),
                resolved: format!("mock:{id}"),
                architecture: "bert".into(),
                parameters: 1000,
                bytes_on_disk: 4000,
                head_labels: labels.clone(),
                weight_bytes: None,
                quantization: None,
                tokenizer: None,
                kernels: Default::default(),
            },
            labels,
        }
    }

    fn text(input: &TextInput) -> String {
        format!("{} {}", input.a, input.b.unwrap_or(""))
    }

    /// Wrap output rows; a mock "token" is a word, plus two special tokens per input.
    fn batched(inputs: &[TextInput], rows: Vec<Vec<f32>>) -> Batched {
        Batched {
            token_counts: inputs
                .iter()
                .map(|i| Self::text(i).split_whitespace().count() + 2)
                .collect(),
            rows,
            n_truncated: 0,
            forward_s: 0.0,
        }
    }
}

impl Backend for MockBackend {
    fn info(&self) -> &CheckpointInfo {
        &self.info
    }
    fn head_labels(&self) -> Option<&[String]> {
        self.labels.as_deref()
    }
    fn logits(&self, inputs: &[TextInput], _batch_size: usize) -> Result<Batched> {
        let Some(labels) = &self.labels else {
            bail!("mock model has no head");
        };
        let rows = inputs
            .iter()
            .map(|i| {
                let pick = Self::text(i).len() % labels.len();
                (0..labels.len())
                    .map(|k| if k == pick { 2.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        Ok(Self::batched(inputs, rows))
    }
    fn dims(&self) -> Option<crate::profile::flops::EncoderDims> {
        None
    }
    fn embeddings(&self, inputs: &[TextInput], _batch_size: usize) -> Result<Batched> {
        let rows = inputs
            .iter()
            .map(|i| {
                let mut v = vec![0.0f32; 26];
                for c in i.a.chars().filter(char::is_ascii_alphabetic) {
                    v[(c.to_ascii_lowercase() as u8 - b'a') as usize] += 1.0;
                }
                v
            })
            .collect();
        Ok(Self::batched(inputs, rows))
    }
}
