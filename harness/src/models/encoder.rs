//! Encoders (BERT, DistilBERT, MPNet; with or without a sequence-classification head) behind
//! one backend: tokenise, sort by length, pad per batch, run the network, then pool or
//! classify. The architecture ports live one file each beside this one, behind [`EncoderNet`].

use std::cmp::Reverse;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use reports::CheckpointInfo;
use tasks::request::{unsupported, Request, RequestKind, Response};
use tokenizers::{EncodeInput, Tokenizer};

use super::checkpoint::{
    canonical, check_tokenizer_fits, open_weights, pooling_settings, read_json, OpenedWeights,
};
use super::{bert, distilbert, linear, mpnet, nn, tokenizer, Backend, Batched, TextInput};
use crate::profile::flops::EncoderDims;

/// The tensor-level interface each architecture implements.
pub trait EncoderNet: Send + Sync {
    /// Last hidden states (batch, seq, hidden) for a padded batch; `mask` is 1 for real tokens.
    fn encode(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor>;
    fn has_head(&self) -> bool;
    /// Classification logits (batch, labels) from the last hidden states.
    fn classify(&self, hidden: &Tensor) -> candle_core::Result<Tensor>;
    /// Every linear layer, encoder and head, for `--student-quantize`.
    fn linears_mut(&mut self) -> Vec<&mut linear::Lin>;
}

/// How token states become one sentence vector (sentence-transformers' `1_Pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Max,
    MeanSqrtLen,
}

/// An encoder architecture: its `model_type` in `config.json` and how to build its network
/// from that config and a VarBuilder (checkpoint weights, or random ones from a VarMap).
/// Adding an architecture is its port's file plus one row in [`ENCODERS`].
pub struct EncoderArch {
    pub model_type: &'static str,
    pub build: fn(&serde_json::Value, VarBuilder) -> std::result::Result<Built, BuildError>,
}

/// Every encoder architecture, found by `model_type`.
pub static ENCODERS: &[EncoderArch] = &[bert::ARCH, distilbert::ARCH, mpnet::ARCH];

/// What an architecture's builder hands back.
pub struct Built {
    pub net: Box<dyn EncoderNet>,
    pub vocab_size: usize,
    /// Longest input the position embeddings allow.
    pub max_positions: usize,
    /// Label names of the head (empty without one).
    pub labels: Vec<String>,
    pub default_pad: u32,
    pub dims: EncoderDims,
}

/// Why a network could not be built.
pub enum BuildError {
    /// `config.json` lacks a field or has a wrong one.
    Config(serde_json::Error),
    /// The weights do not have the tensors the config implies.
    Weights(candle_core::Error),
}

impl From<serde_json::Error> for BuildError {
    fn from(e: serde_json::Error) -> Self {
        BuildError::Config(e)
    }
}

impl From<candle_core::Error> for BuildError {
    fn from(e: candle_core::Error) -> Self {
        BuildError::Weights(e)
    }
}

/// Build an architecture's network, with errors that name the file at fault.
fn build_net(
    arch: &EncoderArch,
    raw: &serde_json::Value,
    config_path: &Path,
    vb: VarBuilder,
    weights_name: &str,
) -> Result<Built> {
    (arch.build)(raw, vb).map_err(|e| match e {
        BuildError::Config(e) => anyhow::anyhow!(
            "{}: missing or invalid field for {}: {e}",
            config_path.display(),
            arch.model_type
        ),
        BuildError::Weights(e) => {
            anyhow::anyhow!("{}: weights do not match config.json ({e})", weights_name)
        }
    })
}

/// Read `config.json` and find its architecture.
fn read_config(config_path: &Path) -> Result<(serde_json::Value, &'static EncoderArch)> {
    let raw: serde_json::Value = read_json(config_path)?;
    let model_type = raw.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    let arch = ENCODERS
        .iter()
        .find(|a| a.model_type == model_type)
        .with_context(|| {
            let known: Vec<&str> = ENCODERS.iter().map(|a| a.model_type).collect();
            format!(
                "{}: unsupported architecture model_type '{model_type}' (supported: {})",
                config_path.display(),
                known.join(", ")
            )
        })?;
    Ok((raw, arch))
}

/// A loaded encoder checkpoint: tokenizer, network, pooling.
pub struct EncoderBackend {
    net: Box<dyn EncoderNet>,
    /// `None` for a model built from a bare `config.json` (random weights, synthetic inputs).
    tokenizer: Option<Tokenizer>,
    vocab_size: usize,
    /// Longest input the position embeddings allow.
    max_positions: usize,
    pad_id: u32,
    pooling: Pooling,
    normalize: bool,
    head_labels: Option<Vec<String>>,
    info: CheckpointInfo,
    dims: crate::profile::flops::EncoderDims,
    device: Device,
}

/// Options that shape how a checkpoint is loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// Cap on tokens per input; the model's own maximum applies when lower.
    pub max_length: Option<usize>,
}

impl EncoderBackend {
    /// Load a checkpoint folder in Hub snapshot layout. Cheap checks (files present, config
    /// readable, architecture supported) come before the weights are touched.
    pub fn load(id: &str, dir: &Path, opts: &LoadOptions) -> Result<Self> {
        if !dir.is_dir() {
            bail!("model folder not found: {}", dir.display());
        }
        let config_path = dir.join("config.json");
        if !config_path.exists() {
            bail!(
                "{}: no config.json; is this a Hugging Face model folder?",
                dir.display()
            );
        }
        let (raw, arch) = read_config(&config_path)?;
        let OpenedWeights {
            file: weights,
            bytes_on_disk,
            parameters,
            vb,
        } = open_weights(dir, &opts.device)?;

        let built = build_net(
            arch,
            &raw,
            &config_path,
            vb,
            &weights.path.display().to_string(),
        )?;
        let Built {
            net,
            vocab_size,
            max_positions,
            labels,
            default_pad,
            dims,
        } = built;
        let max_length = opts
            .max_length
            .map_or(max_positions, |m| m.min(max_positions));
        let tokenizer = tokenizer::load_tokenizer(dir, max_length)?;
        check_tokenizer_fits(dir, &tokenizer, vocab_size)?;
        let pad_id = raw
            .get("pad_token_id")
            .and_then(|v| v.as_u64())
            .map(|v| v as u32)
            .unwrap_or(default_pad);
        let (pooling, normalize) = pooling_settings(dir)?;
        let head_labels = net.has_head().then_some(labels);
        let mut backend = EncoderBackend {
            info: CheckpointInfo {
                id: id.to_string(),
                resolved: canonical(dir),
                architecture: arch.model_type.to_string(),
                parameters,
                bytes_on_disk,
                head_labels: head_labels.clone(),
                weight_bytes: Some(parameters * 4),
                quantization: None,
                tokenizer: Some(if dir.join("tokenizer.json").exists() {
                    "tokenizer.json".into()
                } else {
                    "vocab.txt".into()
                }),
                kernels: Default::default(),
            },
            net,
            tokenizer: Some(tokenizer),
            vocab_size,
            max_positions,
            pad_id,
            pooling,
            normalize,
            head_labels,
            dims,
            device: opts.device.clone(),
        };
        backend.record_kernels();
        Ok(backend)
    }

    /// A model with random weights from a bare `config.json`, for profiling shapes without
    /// downloading weights. It has no tokenizer; use [`EncoderBackend::forward_synthetic`].
    pub fn random_from_config(config_path: &Path, device: &Device) -> Result<Self> {
        let (raw, arch) = read_config(config_path)?;
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let built = build_net(arch, &raw, config_path, vb, "random weights")?;
        let parameters: u64 = varmap
            .all_vars()
            .iter()
            .map(|v| v.elem_count() as u64)
            .sum();
        let mut backend = EncoderBackend {
            info: CheckpointInfo {
                id: config_path.display().to_string(),
                resolved: format!("random weights from {}", config_path.display()),
                architecture: arch.model_type.to_string(),
                parameters,
                bytes_on_disk: 0,
                head_labels: None,
                weight_bytes: Some(parameters * 4),
                quantization: None,
                tokenizer: None,
                kernels: Default::default(),
            },
            net: built.net,
            tokenizer: None,
            vocab_size: built.vocab_size,
            max_positions: built.max_positions,
            pad_id: built.default_pad,
            pooling: Pooling::Mean,
            normalize: false,
            head_labels: None,
            dims: built.dims,
            device: device.clone(),
        };
        backend.record_kernels();
        Ok(backend)
    }

    /// Quantize every linear layer (attention, feed-forward, pooler and head) to `dtype`;
    /// embeddings and layer norms stay f32.
    pub fn quantize(&mut self, dtype: candle_core::quantized::GgmlDType) -> Result<()> {
        linear::quantize_linears(self.net.linears_mut(), dtype, &mut self.info)?;
        self.record_kernels();
        Ok(())
    }

    /// Name in [`CheckpointInfo::kernels`] the kernels this host runs the layers on.
    fn record_kernels(&mut self) {
        self.info.kernels = linear::kernels_of(self.net.linears_mut());
    }

    /// Longest sequence the model accepts.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// One forward pass over `batch` random sequences of exactly `seq` tokens (no padding),
    /// returning the seconds it took. Token ids avoid the low ids where special tokens live.
    pub fn forward_synthetic(&self, batch: usize, seq: usize, seed: u64) -> Result<f64> {
        let mut rng = reports::stats::SplitMix64(seed);
        let lo = 1000.min(self.vocab_size / 2) as u64;
        let span = (self.vocab_size as u64).saturating_sub(lo).max(1);
        let ids: Vec<u32> = (0..batch * seq)
            .map(|_| (lo + rng.next_u64() % span) as u32)
            .collect();
        let started = std::time::Instant::now();
        let ids = Tensor::from_vec(ids, (batch, seq), &self.device)?;
        let types = ids.zeros_like()?;
        let mask = ids.ones_like()?;
        let hidden = self.net.encode(&ids, &types, &mask)?;
        let out = self.pool(&hidden, &mask)?;
        let _ = out.to_vec2::<f32>()?;
        Ok(started.elapsed().as_secs_f64())
    }

    /// Record where the checkpoint came from (Hub id and commit) instead of the cache path.
    pub fn set_resolved(&mut self, resolved: String) {
        self.info.resolved = resolved;
    }

    /// Token ids of one input, as the model will see them (for parity tests).
    pub fn token_ids(&self, input: &TextInput) -> Result<Vec<u32>> {
        let enc = self.encode_all(std::slice::from_ref(input))?;
        Ok(enc[0].get_ids().to_vec())
    }

    fn encode_all(&self, inputs: &[TextInput]) -> Result<Vec<tokenizers::Encoding>> {
        let batch: Vec<EncodeInput> = inputs
            .iter()
            .map(|i| match i.b {
                Some(b) => EncodeInput::Dual(i.a.into(), b.into()),
                None => EncodeInput::Single(i.a.into()),
            })
            .collect();
        self.tokenizer
            .as_ref()
            .with_context(|| {
                format!(
                    "{}: built from a bare config.json, this model has no tokenizer (use it with `harness profile`)",
                    self.info.id
                )
            })?
            .encode_batch(batch, true)
            .map_err(|e| anyhow::anyhow!("tokenization failed: {e}"))
    }

    fn pool(&self, hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let pooled = match self.pooling {
            Pooling::Mean => nn::mean_pool(hidden, mask)?,
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Max => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let penalty = ((m.ones_like()? - &m)? * -1e9)?;
                hidden.broadcast_add(&penalty)?.max(1)?
            }
            Pooling::MeanSqrtLen => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&m)?.sum(1)?;
                summed.broadcast_div(&m.sum(1)?.sqrt()?)?
            }
        };
        if self.normalize {
            let norm = pooled
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12, f64::INFINITY)?;
            pooled.broadcast_div(&norm)
        } else {
            Ok(pooled)
        }
    }

    /// Tokenise, sort by length, pad each batch to its longest member, run, and return rows in
    /// input order. Sorting keeps padding small; results do not depend on the batch size
    /// beyond float rounding because every padded position is masked.
    fn forward_batched(
        &self,
        inputs: &[TextInput],
        batch_size: usize,
        want_logits: bool,
    ) -> Result<Batched> {
        if want_logits && !self.net.has_head() {
            bail!("{}: this checkpoint has no task head", self.info.id);
        }
        let encodings = self.encode_all(inputs)?;
        let n_truncated = encodings
            .iter()
            .filter(|e| !e.get_overflowing().is_empty())
            .count();
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| (Reverse(encodings[i].len()), i));
        let mut rows = vec![Vec::new(); inputs.len()];
        let mut forward_s = 0.0;
        for chunk in order.chunks(batch_size.max(1)) {
            let started = std::time::Instant::now();
            let width = chunk.iter().map(|&i| encodings[i].len()).max().unwrap_or(0);
            let mut ids = Vec::with_capacity(chunk.len() * width);
            let mut types = Vec::with_capacity(chunk.len() * width);
            let mut mask = Vec::with_capacity(chunk.len() * width);
            for &i in chunk {
                let e = &encodings[i];
                let pad = width - e.len();
                ids.extend(
                    e.get_ids()
                        .iter()
                        .copied()
                        .chain(std::iter::repeat_n(self.pad_id, pad)),
                );
                types.extend(
                    e.get_type_ids()
                        .iter()
                        .copied()
                        .chain(std::iter::repeat_n(0, pad)),
                );
                mask.extend(std::iter::repeat_n(1u32, e.len()).chain(std::iter::repeat_n(0, pad)));
            }
            let shape = (chunk.len(), width);
            let ids = Tensor::from_vec(ids, shape, &self.device)?;
            let types = Tensor::from_vec(types, shape, &self.device)?;
            let mask = Tensor::from_vec(mask, shape, &self.device)?;
            let hidden = self.net.encode(&ids, &types, &mask)?;
            let out = if want_logits {
                self.net.classify(&hidden)?
            } else {
                self.pool(&hidden, &mask)?
            };
            let out = out.to_vec2::<f32>()?;
            forward_s += started.elapsed().as_secs_f64();
            for (row, &i) in out.into_iter().zip(chunk) {
                rows[i] = row;
            }
        }
        Ok(Batched {
            rows,
            n_truncated,
            token_counts: encodings.iter().map(|e| e.len()).collect(),
            forward_s,
        })
    }
}

impl Backend for EncoderBackend {
    fn info(&self) -> &CheckpointInfo {
        &self.info
    }
    fn answers(&self) -> &'static [RequestKind] {
        &[RequestKind::Classify, RequestKind::Embed]
    }
    fn head_labels(&self) -> Option<&[String]> {
        self.head_labels.as_deref()
    }
    fn dims(&self) -> Option<EncoderDims> {
        Some(self.dims)
    }
    fn run(&self, task: &str, request: Request) -> Result<Response> {
        match request {
            Request::Classify { inputs, batch_size } => Ok(Response::Rows(
                self.forward_batched(inputs, batch_size, true)?,
            )),
            Request::Embed { inputs, batch_size } => Ok(Response::Rows(
                self.forward_batched(inputs, batch_size, false)?,
            )),
            other => bail!(unsupported(
                other.kind(),
                task,
                &self.info.id,
                self.answers()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_type_is_registered_once() {
        let mut names: Vec<&str> = ENCODERS.iter().map(|a| a.model_type).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a model_type is registered twice");
        assert_eq!(names, ["bert", "distilbert", "mpnet"]);
    }
}
