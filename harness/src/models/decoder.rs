//! Causal language models behind one backend: GPT-2 / DistilGPT-2 and Llama-family checkpoints
//! (`config.json` + safetensors or `pytorch_model.bin`), and Llama-family GGUF files, kept
//! quantized or dequantized to f32. The run loop asks two things of them: the logits of every
//! position of a token window (perplexity, token-level fidelity) and a greedy continuation of
//! a prompt through a KV cache (time to first token, decode speed).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use reports::CheckpointInfo;
use tasks::request::{unsupported, Generation, LogLikelihood, Request, RequestKind, Response};
use tokenizers::Tokenizer;

use super::backend::{loglikelihoods, rolling_loglikelihood, score_rows};
use super::encoder::BuildError;
use super::linear::Lin;
use super::nn::KvCache;
use super::{canonical, Backend};

/// The tensor-level interface each causal-LM port implements.
pub trait DecoderNet: Send + Sync {
    /// Logits of every position (batch, seq, vocab) for a right-padded batch.
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor>;
    /// Logits of the new positions, attending to everything in `cache`, which they extend.
    fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> candle_core::Result<Tensor>;
    /// [`DecoderNet::forward_cached`] giving the logits `(batch, 1, vocab)` of the last
    /// position only.
    fn forward_cached_last(&self, ids: &Tensor, cache: &mut KvCache)
        -> candle_core::Result<Tensor>;
    /// Every linear layer, for `--student-quantize`.
    fn linears_mut(&mut self) -> Vec<&mut Lin>;
}

/// A decoder architecture: its `model_type` in `config.json` and how to build it. Adding one
/// is its port's file plus one row in [`DECODERS`].
pub struct DecoderArch {
    pub model_type: &'static str,
    pub build: fn(&serde_json::Value, VarBuilder) -> std::result::Result<BuiltDecoder, BuildError>,
    /// The hard position limit its config sets, if any (read without loading weights).
    pub max_positions: fn(&serde_json::Value) -> Option<usize>,
}

/// Every decoder architecture of checkpoint folders, found by `model_type` (GGUF files are
/// Llama-family and read by `gguf.rs`).
pub static DECODERS: &[DecoderArch] = &[
    super::gpt2::ARCH,
    super::llama::ARCH,
    super::llama::QWEN2_ARCH,
    super::llama::MISTRAL_ARCH,
    super::llama::QWEN3_ARCH,
    super::llama::PHI3_ARCH,
    super::llama::GEMMA2_ARCH,
    super::llama::GEMMA3_ARCH,
    super::llama::GEMMA3_MULTIMODAL_ARCH,
];

/// What a decoder architecture's builder hands back.
pub struct BuiltDecoder {
    pub net: Box<dyn DecoderNet>,
    pub max_positions: Option<usize>,
    pub vocab_size: usize,
    pub hidden: usize,
}

fn decoder_arch(raw: &serde_json::Value) -> Option<&'static DecoderArch> {
    let model_type = raw.get("model_type").and_then(|v| v.as_str())?;
    DECODERS.iter().find(|a| a.model_type == model_type)
}

/// A loaded causal LM with its tokenizer.
pub struct DecoderBackend {
    net: Box<dyn DecoderNet>,
    tokenizer: Tokenizer,
    info: CheckpointInfo,
    device: Device,
    /// Longest sequence the position embeddings allow (`None`: rotary, no hard limit).
    max_positions: Option<usize>,
    /// Tokens that end a generation: `eos_token_id`, one id or several (Llama 3 instruct and
    /// Gemma 3 list their end-of-turn tokens too).
    eos: Vec<u32>,
    /// Parameters outside the embedding lookups, for the 2N FLOPs-per-token estimate.
    matmul_parameters: u64,
}

/// The `.gguf` file a model argument names: the file itself, or the only one in a folder
/// without `config.json`.
pub fn gguf_path(path: &Path) -> Result<Option<PathBuf>> {
    if path.is_file() {
        return Ok(path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
            .then(|| path.to_path_buf()));
    }
    if path.join("config.json").exists() || !path.is_dir() {
        return Ok(None);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("{}: cannot list", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        })
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => bail!(
            "{}: several .gguf files ({}); name the one to use",
            path.display(),
            found
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Whether a model folder or file holds a decoder (GPT-2, Llama, or any GGUF file).
pub fn is_decoder(path: &Path) -> Result<bool> {
    if gguf_path(path)?.is_some() {
        return Ok(true);
    }
    let config = path.join("config.json");
    if !config.exists() {
        return Ok(false);
    }
    let raw: serde_json::Value = super::read_json(&config)?;
    Ok(decoder_arch(&raw).is_some())
}

impl DecoderBackend {
    /// Load a decoder from a folder (`config.json` with one of the `model_type`s of [`DECODERS`]) or a GGUF
    /// file. A GGUF file is kept quantized unless `dequantize`.
    pub fn load(id: &str, path: &Path, device: &Device, dequantize: bool) -> Result<Self> {
        if !path.exists() {
            bail!("model folder not found: {}", path.display());
        }
        let mut model = match gguf_path(path)? {
            Some(file) => Self::load_gguf(id, &file, device, dequantize)?,
            None => Self::load_folder(id, path, device)?,
        };
        model.info.kernels = super::linear::kernels_of(model.net.linears_mut());
        Ok(model)
    }

    fn load_gguf(id: &str, file: &Path, device: &Device, dequantize: bool) -> Result<Self> {
        let (_, content) = super::gguf::read_header(file)?;
        let parameters: u64 = content
            .tensor_infos
            .values()
            .map(|t| t.shape.elem_count() as u64)
            .sum();
        let embedding: u64 = content
            .tensor_infos
            .get("token_embd.weight")
            .map_or(0, |t| t.shape.elem_count() as u64);
        // The dominant block type of the weights names the file's quantization.
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for t in content.tensor_infos.values() {
            *counts
                .entry(super::linear::ggml_name(t.ggml_dtype))
                .or_default() += t.shape.elem_count() as u64;
        }
        let dominant = counts
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, _)| k.clone())
            .unwrap_or_default();
        let beside = file.with_file_name("tokenizer.json");
        let (tokenizer, tokenizer_source) = if beside.exists() {
            (
                Tokenizer::from_file(&beside)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("{}: cannot parse tokenizer", beside.display()))?,
                "tokenizer.json",
            )
        } else {
            (
                super::gguf_tokenizer::from_content(&content, &file.display().to_string())?,
                "gguf metadata",
            )
        };
        let gguf_architecture = super::gguf::architecture(&content);
        let eos: Vec<u32> = super::gguf_tokenizer::special_ids(&content)
            .get("eos")
            .copied()
            .into_iter()
            .collect();
        let (model, _cfg) = if dequantize {
            super::gguf::load_llama_dequantized(file, device)?
        } else {
            super::gguf::load_llama_quantized(file, device)?
        };
        let bytes_on_disk = std::fs::metadata(file)?.len();
        let weight_bytes = if dequantize {
            parameters * 4
        } else {
            bytes_on_disk
        };
        Ok(DecoderBackend {
            info: CheckpointInfo {
                id: id.to_string(),
                resolved: canonical(file),
                architecture: super::gguf::model_type(&gguf_architecture).to_string(),
                parameters,
                bytes_on_disk,
                head_labels: None,
                weight_bytes: Some(weight_bytes),
                quantization: Some(if dequantize {
                    format!("none (gguf {dominant} dequantized to f32)")
                } else {
                    format!("{dominant} (gguf)")
                }),
                tokenizer: Some(tokenizer_source.into()),
                kernels: Default::default(),
            },
            net: Box::new(model),
            max_positions: None,
            tokenizer,
            device: device.clone(),
            eos,
            matmul_parameters: parameters - embedding,
        })
    }

    fn load_folder(id: &str, dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.exists() {
            bail!(
                "{}: no config.json and no .gguf file; is this a Hugging Face model folder?",
                dir.display()
            );
        }
        let raw: serde_json::Value = super::read_json(&config_path)?;
        let model_type = raw
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let super::OpenedWeights {
            file: weights,
            bytes_on_disk,
            parameters,
            vb,
        } = super::open_weights(dir, device)?;
        let bad_config = |e: serde_json::Error| {
            anyhow::anyhow!("{}: missing or invalid field: {e}", config_path.display())
        };
        let wrap = |e: candle_core::Error| {
            anyhow::anyhow!(
                "{}: weights do not match config.json ({e})",
                weights.path.display()
            )
        };
        let Some(arch) = decoder_arch(&raw) else {
            let known: Vec<&str> = DECODERS.iter().map(|a| a.model_type).collect();
            bail!(
                "{}: model_type '{model_type}' is not a supported decoder ({}, or a .gguf file)",
                config_path.display(),
                known.join(", ")
            );
        };
        let BuiltDecoder {
            net,
            max_positions,
            vocab_size: vocab,
            hidden,
        } = (arch.build)(&raw, vb).map_err(|e| match e {
            BuildError::Config(e) => bad_config(e),
            BuildError::Weights(e) => wrap(e),
        })?;
        // A multimodal checkpoint counts the language model it runs, not its vision tower.
        let parameters = if model_type == "gemma3" {
            let lm = ["language_model.", "model.language_model.", "lm_head."];
            super::checkpoint::count_parameters_under(&weights, &lm)?
        } else {
            parameters
        };
        let json = dir.join("tokenizer.json");
        if !json.exists() {
            bail!(
                "{}: no tokenizer.json; a decoder folder needs one",
                dir.display()
            );
        }
        let tokenizer = Tokenizer::from_file(&json)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("{}: cannot parse tokenizer", json.display()))?;
        super::check_tokenizer_fits(dir, &tokenizer, vocab)?;
        let eos = eos_ids(raw.get("eos_token_id"));
        let embeddings = (vocab * hidden + max_positions.unwrap_or(0) * hidden) as u64;
        Ok(DecoderBackend {
            info: CheckpointInfo {
                id: id.to_string(),
                resolved: canonical(dir),
                architecture: model_type,
                parameters,
                bytes_on_disk,
                head_labels: None,
                weight_bytes: Some(parameters * 4),
                quantization: None,
                tokenizer: Some("tokenizer.json".into()),
                kernels: Default::default(),
            },
            net,
            tokenizer,
            device: device.clone(),
            max_positions,
            eos,
            matmul_parameters: parameters.saturating_sub(embeddings),
        })
    }

    pub fn info(&self) -> &CheckpointInfo {
        &self.info
    }

    /// Record where the checkpoint came from (Hub id and commit) instead of the cache path.
    pub fn set_resolved(&mut self, resolved: String) {
        self.info.resolved = resolved;
    }

    pub fn max_positions(&self) -> Option<usize> {
        self.max_positions
    }

    /// Approximate forward FLOPs per token: 2 x the parameters that multiply (embedding
    /// lookups excluded), attention scores left out (Kaplan et al., 2020).
    pub fn flops_per_token(&self) -> f64 {
        2.0 * self.matmul_parameters as f64
    }

    /// Quantize every linear layer (attention, MLP and the output head) to `dtype`; the
    /// embeddings and norms stay f32.
    pub fn quantize(&mut self, dtype: GgmlDType) -> Result<()> {
        super::linear::quantize_linears(self.net.linears_mut(), dtype, &mut self.info)?;
        self.info.kernels = super::linear::kernels_of(self.net.linears_mut());
        Ok(())
    }

    /// Token ids of a text as the model's tokenizer gives them (special tokens as the
    /// tokenizer adds them), with the byte offset where each token ends.
    pub fn encode(&self, text: &str) -> Result<(Vec<u32>, Vec<usize>)> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| anyhow::anyhow!("tokenization failed: {e}"))?;
        Ok((
            enc.get_ids().to_vec(),
            enc.get_offsets().iter().map(|o| o.1).collect(),
        ))
    }

    /// Logits of every position of one window of tokens, one row per position.
    pub fn window_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        if let Some(max) = self.max_positions {
            if ids.len() > max {
                bail!(
                    "{}: a window of {} tokens exceeds the model's {max} positions; lower --context-length",
                    self.info.id,
                    ids.len()
                );
            }
        }
        let t = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &self.device)?;
        let mask = t.ones_like()?;
        Ok(self.net.forward(&t, &mask)?.squeeze(0)?.to_vec2::<f32>()?)
    }

    /// Greedy decoding of up to `new_tokens` tokens after `prompt`, through the KV cache;
    /// stops early at the end-of-sequence token.
    pub fn generate(&self, prompt: &str, new_tokens: usize) -> Result<Generation> {
        let started = Instant::now();
        let (ids, _) = self.encode(prompt)?;
        if ids.is_empty() {
            bail!("the prompt '{prompt}' has no tokens");
        }
        if let Some(max) = self.max_positions {
            if ids.len() + new_tokens > max {
                bail!(
                    "{}: prompt ({} tokens) + {new_tokens} new tokens exceed the model's {max} positions; lower --max-new-tokens",
                    self.info.id,
                    ids.len()
                );
            }
        }
        let mut cache = KvCache::default();
        let step = |input: &[u32], cache: &mut KvCache| -> Result<u32> {
            let t = Tensor::from_vec(input.to_vec(), (1, input.len()), &self.device)?;
            let logits = self.net.forward_cached(&t, cache)?;
            let last = logits.squeeze(0)?.get(input.len() - 1)?;
            Ok(last.argmax(0)?.to_scalar::<u32>()?)
        };
        let mut tokens = Vec::with_capacity(new_tokens);
        let mut stopped_at_eos = false;
        let mut ttft_s = 0.0;
        if new_tokens > 0 {
            tokens.push(step(&ids, &mut cache)?);
            ttft_s = started.elapsed().as_secs_f64();
        }
        let decode_started = Instant::now();
        while tokens.len() < new_tokens {
            let last = *tokens.last().expect("one token");
            if self.eos.contains(&last) {
                stopped_at_eos = true;
                break;
            }
            tokens.push(step(&[last], &mut cache)?);
        }
        if tokens.last().is_some_and(|t| self.eos.contains(t)) {
            stopped_at_eos = true;
        }
        let decode_s = decode_started.elapsed().as_secs_f64();
        let text = self
            .tokenizer
            .decode(&tokens, true)
            .map_err(|e| anyhow::anyhow!("detokenization failed: {e}"))?;
        Ok(Generation {
            tokens,
            text,
            stopped_at_eos,
            prompt_tokens: ids.len(),
            ttft_s,
            decode_s,
        })
    }

    /// Continuations of one context with the context run once through the KV cache: its last
    /// position's distribution scores every continuation's first token, and the rest of the
    /// continuations run `batch_size` at a time, right-padded (a causal model never looks at
    /// the padding after a token), against the cache repeated along the batch. `None` when a
    /// continuation is empty or the whole would pass the position limit, where the one-window
    /// path cuts the context from the left as lm-eval does.
    fn prefix_cached_loglikelihoods(
        &self,
        context: &[u32],
        continuations: &[Vec<u32>],
        batch_size: usize,
    ) -> Result<Option<Vec<LogLikelihood>>> {
        let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
        if context.is_empty() || continuations.iter().any(Vec::is_empty) {
            return Ok(None);
        }
        if self
            .max_positions
            .is_some_and(|max| context.len() + longest - 1 > max)
        {
            return Ok(None);
        }
        let mut cache = KvCache::default();
        let t = Tensor::from_vec(context.to_vec(), (1, context.len()), &self.device)?;
        let last: Vec<f32> = self
            .net
            .forward_cached_last(&t, &mut cache)?
            .flatten_all()?
            .to_vec1()?;
        // Rows predicting each continuation's tokens; the first row is the context's last.
        let mut rows: Vec<Vec<Vec<f32>>> = vec![vec![last]; continuations.len()];
        let mut rest: Vec<usize> = (0..continuations.len())
            .filter(|&i| continuations[i].len() > 1)
            .collect();
        // Longest first, so that a batch pads little (lm-eval sorts the same way).
        rest.sort_by_key(|&i| std::cmp::Reverse(continuations[i].len()));
        for chunk in rest.chunks(batch_size.max(1)) {
            let width = continuations[chunk[0]].len() - 1;
            let mut ids = Vec::with_capacity(chunk.len() * width);
            for &i in chunk {
                let c = &continuations[i][..continuations[i].len() - 1];
                ids.extend_from_slice(c);
                ids.extend(std::iter::repeat_n(0u32, width - c.len()));
            }
            let t = Tensor::from_vec(ids, (chunk.len(), width), &self.device)?;
            let mut batch_cache = cache.repeat_batch(chunk.len())?;
            let logits: Vec<Vec<Vec<f32>>> =
                self.net.forward_cached(&t, &mut batch_cache)?.to_vec3()?;
            for (&i, seq) in chunk.iter().zip(logits) {
                let n = continuations[i].len() - 1;
                rows[i].extend(seq.into_iter().take(n));
            }
        }
        rows.iter()
            .zip(continuations)
            .map(|(r, c)| score_rows(r, c))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// A hash of the vocabulary (token -> id, sorted), equal for two decoders that tokenize
    /// identically, which token-level fidelity needs.
    pub fn vocabulary_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut vocab: Vec<(String, u32)> = self.tokenizer.get_vocab(true).into_iter().collect();
        vocab.sort();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        vocab.hash(&mut h);
        h.finish()
    }
}

impl Backend for DecoderBackend {
    fn info(&self) -> &CheckpointInfo {
        &self.info
    }
    fn answers(&self) -> &'static [RequestKind] {
        &[
            RequestKind::LogLikelihood,
            RequestKind::LogLikelihoodRolling,
            RequestKind::Generate,
        ]
    }
    fn run(&self, task: &str, request: Request) -> Result<Response> {
        match request {
            Request::LogLikelihood { pairs, batch_size } => Ok(Response::LogLikelihoods(
                loglikelihoods(self, pairs, batch_size)?,
            )),
            Request::LogLikelihoodRolling { text, window } => Ok(Response::Rolling(
                rolling_loglikelihood(self, text, window)?,
            )),
            Request::Generate {
                prompts,
                max_new_tokens,
            } => Ok(Response::Generations(
                prompts
                    .iter()
                    .map(|p| self.generate(p, max_new_tokens))
                    .collect::<Result<_>>()?,
            )),
            other => bail!(unsupported(
                other.kind(),
                task,
                &self.info.id,
                self.answers()
            )),
        }
    }
    fn tokenize(&self, text: &str) -> Result<(Vec<u32>, Vec<usize>)> {
        self.encode(text)
    }
    fn window_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        DecoderBackend::window_logits(self, ids)
    }
    fn max_positions(&self) -> Option<usize> {
        self.max_positions
    }
    fn vocabulary_id(&self) -> Option<u64> {
        Some(self.vocabulary_hash())
    }
    fn flops_per_token(&self) -> f64 {
        DecoderBackend::flops_per_token(self)
    }
    fn shared_context_loglikelihoods(
        &self,
        context: &[u32],
        continuations: &[Vec<u32>],
        batch_size: usize,
    ) -> Result<Option<Vec<LogLikelihood>>> {
        self.prefix_cached_loglikelihoods(context, continuations, batch_size)
    }
}

/// `eos_token_id` of a config: one id, or a list of them.
fn eos_ids(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Array(ids)) => ids
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        Some(x) => x.as_u64().map(|x| x as u32).into_iter().collect(),
        None => Vec::new(),
    }
}

/// The hard position limit of a decoder at `path`, read from its `config.json` without loading
/// weights (GPT-2's `n_positions`; Llama and GGUF files: none), so that both models of a pair
/// can agree on a context length before either is loaded.
pub fn peek_max_positions(path: &Path) -> Result<Option<usize>> {
    if gguf_path(path)?.is_some() {
        return Ok(None);
    }
    let raw: serde_json::Value = super::read_json(&path.join("config.json"))?;
    Ok(decoder_arch(&raw).and_then(|a| (a.max_positions)(&raw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_is_one_id_or_a_list() {
        assert_eq!(eos_ids(Some(&serde_json::json!(2))), [2]);
        // Llama 3 instruct: end of text, end of message, end of turn.
        assert_eq!(
            eos_ids(Some(&serde_json::json!([128001, 128008, 128009]))),
            [128001, 128008, 128009]
        );
        assert!(eos_ids(Some(&serde_json::Value::Null)).is_empty());
        assert!(eos_ids(None).is_empty());
    }

    #[test]
    fn the_results_schema_knows_every_architecture() {
        // results.schema.json lists the architectures a checkpoint may name; a port added
        // without it would fail every results check of a run that uses it.
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../reports/results.schema.json")).unwrap();
        let known = schema.pointer("/$defs/checkpoint/properties/architecture/enum");
        let known: Vec<&str> = known
            .and_then(|v| v.as_array())
            .expect("the schema lists architectures")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let ours = DECODERS
            .iter()
            .map(|a| a.model_type)
            .chain(super::super::encoder::ENCODERS.iter().map(|a| a.model_type));
        for arch in ours {
            assert!(known.contains(&arch), "results.schema.json lacks '{arch}'");
        }
    }

    #[test]
    fn every_decoder_model_type_is_registered_once_and_peeks_its_limit() {
        let names: Vec<&str> = DECODERS.iter().map(|a| a.model_type).collect();
        assert_eq!(
            names,
            [
                "gpt2",
                "llama",
                "qwen2",
                "mistral",
                "qwen3",
                "phi3",
                "gemma2",
                "gemma3_text",
                "gemma3"
            ]
        );
        // Sliding windows are masked exactly, so they set no length limit.
        for windowed in [
            serde_json::json!({"model_type": "mistral", "sliding_window": 4096}),
            serde_json::json!({"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": true}),
        ] {
            assert_eq!(
                decoder_arch(&windowed).and_then(|a| (a.max_positions)(&windowed)),
                None
            );
        }
        let gpt2 = serde_json::json!({"model_type": "gpt2", "n_positions": 1024});
        assert_eq!(
            decoder_arch(&gpt2).and_then(|a| (a.max_positions)(&gpt2)),
            Some(1024)
        );
        let llama = serde_json::json!({"model_type": "llama"});
        assert_eq!(
            decoder_arch(&llama).and_then(|a| (a.max_positions)(&llama)),
            None
        );
        assert!(decoder_arch(&serde_json::json!({"model_type": "bert"})).is_none());
    }
}
