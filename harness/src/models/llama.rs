//! Llama-family decoders (Llama, SmolLM2, ...; Qwen2 / Qwen2.5 and Mistral share the port),
//! ported from transformers' `models/llama/modeling_llama.py`
//! (https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py;
//! `models/qwen2/modeling_qwen2.py` differs only by biases on the q, k and v projections,
//! `models/mistral/modeling_mistral.py` by its sliding attention window, which caps the
//! sequence length here instead):
//! RMSNorm, rotary position embeddings (the `rotate_half` layout), grouped-query attention and
//! the SwiGLU feed-forward. Unlike candle-transformers' `llama`, `forward` returns the logits of
//! every position, which perplexity and per-token KL need.

use super::decoder::{BuiltDecoder, DecoderArch, DecoderNet};
use super::encoder::BuildError;
use super::linear::Lin;
use super::nn::KvCache;
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder};
use serde::Deserialize;

fn default_eps() -> f64 {
    1e-6
}

/// RoPE settings as transformers 5 writes them (`rope_parameters`).
#[derive(Debug, Clone, Deserialize)]
pub struct RopeParameters {
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_type: Option<String>,
}

/// `config.json` of a Llama-family checkpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// transformers 4 keeps `rope_theta` at the top level; 5 moves it into `rope_parameters`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's `attention_bias`: biases on q, k, v and o.
    #[serde(default)]
    pub attention_bias: bool,
    /// Mistral's (and Qwen2's, with `use_sliding_window`) attention window.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    /// Biases on q, k and v only (Qwen2); set by the architecture, not read from config.json.
    #[serde(skip)]
    pub qkv_bias: bool,
}

impl LlamaConfig {
    fn theta(&self) -> Result<f64> {
        if let Some(p) = &self.rope_parameters {
            match p.rope_type.as_deref() {
                None | Some("default") => return Ok(p.rope_theta),
                Some(other) => {
                    candle_core::bail!("rope_type '{other}' is not supported yet (only 'default')")
                }
            }
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            candle_core::bail!("rope_scaling is not supported yet");
        }
        Ok(self.rope_theta.unwrap_or(10000.0))
    }

    fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
}

/// `LlamaRMSNorm`: `x / sqrt(mean(x^2) + eps) * weight`.
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(RmsNorm {
            weight: vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?,
            eps,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)
    }
}

/// A bias-free projection `(out, in)`: f32, or kept quantized (GGUF blocks, multiplied by
/// candle's quantized kernels without dequantizing).
pub type Proj = Lin;

fn proj(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Proj> {
    super::linear::linear_no_bias(in_dim, out_dim, vb)
}

fn biased(in_dim: usize, out_dim: usize, vb: VarBuilder, bias: bool) -> Result<Proj> {
    if bias {
        super::linear::linear(in_dim, out_dim, vb)
    } else {
        proj(in_dim, out_dim, vb)
    }
}

/// How rotary embeddings pair the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// transformers' `rotate_half`: dimension i pairs with i + d/2.
    RotateHalf,
    /// llama.cpp's layout: dimension 2i pairs with 2i + 1. GGUF Q/K rows are permuted for it,
    /// so a model that keeps GGUF weights as they are uses this layout.
    Interleaved,
}

/// The pieces of one decoder layer, for building a model from another weight source (GGUF).
pub struct LayerParts {
    pub input_norm: Tensor,
    pub q: Proj,
    pub k: Proj,
    pub v: Proj,
    pub o: Proj,
    pub post_norm: Tensor,
    pub gate: Proj,
    pub up: Proj,
    pub down: Proj,
}

struct Layer {
    input_norm: RmsNorm,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    post_norm: RmsNorm,
    gate: Proj,
    up: Proj,
    down: Proj,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// cos and sin for the positions of one forward pass, shaped for the layout.
enum RopeTables {
    RotateHalf { cos: Tensor, sin: Tensor },
    Interleaved { cos: Tensor, sin: Tensor },
}

impl RopeTables {
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            RopeTables::RotateHalf { cos, sin } => {
                x.broadcast_mul(cos)? + rotate_half(x)?.broadcast_mul(sin)?
            }
            RopeTables::Interleaved { cos, sin } => {
                candle_nn::rotary_emb::rope_i(&x.contiguous()?, cos, sin)
            }
        }
    }
}

/// `rotate_half`: `[-x2, x1]` for the two halves of the last dimension.
fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let kv = cfg.num_key_value_heads.unwrap_or(cfg.num_attention_heads);
        let attn = vb.pp("self_attn");
        let mlp = vb.pp("mlp");
        let qkv_bias = cfg.qkv_bias || cfg.attention_bias;
        Ok(Layer {
            input_norm: RmsNorm::load(h, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
            q: biased(h, cfg.num_attention_heads * d, attn.pp("q_proj"), qkv_bias)?,
            k: biased(h, kv * d, attn.pp("k_proj"), qkv_bias)?,
            v: biased(h, kv * d, attn.pp("v_proj"), qkv_bias)?,
            o: biased(
                cfg.num_attention_heads * d,
                h,
                attn.pp("o_proj"),
                cfg.attention_bias,
            )?,
            post_norm: RmsNorm::load(h, cfg.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
            gate: proj(h, cfg.intermediate_size, mlp.pp("gate_proj"))?,
            up: proj(h, cfg.intermediate_size, mlp.pp("up_proj"))?,
            down: proj(cfg.intermediate_size, h, mlp.pp("down_proj"))?,
            heads: cfg.num_attention_heads,
            kv_heads: kv,
            head_dim: d,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        bias: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let n = self.input_norm.forward(x)?;
        let split = |t: Tensor, heads: usize| -> Result<Tensor> {
            t.reshape((b, s, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = rope.apply(&split(self.q.forward(&n)?, self.heads)?)?;
        let k = rope.apply(&split(self.k.forward(&n)?, self.kv_heads)?)?;
        let v = split(self.v.forward(&n)?, self.kv_heads)?;
        let (k, v) = match cache {
            Some((c, i)) => c.extend(i, k, v)?,
            None => (k, v),
        };
        // Grouped-query attention: each KV head serves heads / kv_heads query heads.
        let groups = self.heads / self.kv_heads;
        let repeat = |t: Tensor| -> Result<Tensor> {
            if groups == 1 {
                return Ok(t);
            }
            let (b, kvh, keys, d) = t.dims4()?;
            t.unsqueeze(2)?
                .expand((b, kvh, groups, keys, d))?
                .reshape((b, kvh * groups, keys, d))
        };
        let (k, v) = (repeat(k)?, repeat(v)?);
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, s, self.heads * self.head_dim))?;
        let x = (x + self.o.forward(&ctx)?)?;
        let n = self.post_norm.forward(&x)?;
        let ff = (self.gate.forward(&n)?.silu()? * self.up.forward(&n)?)?;
        x + self.down.forward(&ff)?
    }
}

/// `LlamaForCausalLM`.
pub struct Llama {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Proj,
    head_dim: usize,
    theta: f64,
    rope: RopeLayout,
}

impl Llama {
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let base = vb.pp("model");
        let embed = candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, base.pp("embed_tokens"))?;
        // A tied output projection stays in candle's layout, sharing the embedding table.
        let lm_head = if !cfg.tie_word_embeddings && vb.contains_tensor("lm_head.weight") {
            Lin::new(
                vb.get((cfg.vocab_size, cfg.hidden_size), "lm_head.weight")?,
                None,
            )
        } else {
            Lin::tied(embed.embeddings().clone(), None)
        };
        Ok(Llama {
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::load(base.pp("layers").pp(i), cfg))
                .collect::<Result<Vec<_>>>()?,
            norm: RmsNorm::load(cfg.hidden_size, cfg.rms_norm_eps, base.pp("norm"))?,
            embed,
            lm_head,
            head_dim: cfg.head_dim(),
            theta: cfg.theta()?,
            rope: RopeLayout::RotateHalf,
        })
    }

    /// A model from already-built parts (the GGUF loaders).
    pub fn from_parts(
        cfg: &LlamaConfig,
        embeddings: Tensor,
        layers: Vec<LayerParts>,
        norm: Tensor,
        lm_head: Proj,
        rope: RopeLayout,
    ) -> Result<Self> {
        let kv_heads = cfg.num_key_value_heads.unwrap_or(cfg.num_attention_heads);
        let norm_of = |w: Tensor| RmsNorm {
            weight: w,
            eps: cfg.rms_norm_eps,
        };
        Ok(Llama {
            embed: Embedding::new(embeddings, cfg.hidden_size),
            layers: layers
                .into_iter()
                .map(|p| Layer {
                    input_norm: norm_of(p.input_norm),
                    q: p.q,
                    k: p.k,
                    v: p.v,
                    o: p.o,
                    post_norm: norm_of(p.post_norm),
                    gate: p.gate,
                    up: p.up,
                    down: p.down,
                    heads: cfg.num_attention_heads,
                    kv_heads,
                    head_dim: cfg.head_dim(),
                })
                .collect(),
            norm: norm_of(norm),
            lm_head,
            head_dim: cfg.head_dim(),
            theta: cfg.theta()?,
            rope,
        })
    }

    /// cos and sin for positions `past..past + seq`: `(1, 1, seq, head_dim)` with the two
    /// halves repeated for `rotate_half`, `(seq, head_dim / 2)` for the interleaved kernel.
    fn rope_tables(&self, past: usize, seq: usize, device: &Device) -> Result<RopeTables> {
        let d = self.head_dim;
        let inv: Vec<f32> = (0..d / 2)
            .map(|i| 1.0 / (self.theta as f32).powf(2.0 * i as f32 / d as f32))
            .collect();
        let half: Vec<f32> = (past..past + seq)
            .flat_map(|p| inv.iter().map(move |f| p as f32 * f))
            .collect();
        Ok(match self.rope {
            RopeLayout::RotateHalf => {
                let full: Vec<f32> = half
                    .chunks(d / 2)
                    .flat_map(|c| c.iter().chain(c.iter()).copied())
                    .collect();
                let a = Tensor::from_vec(full, (1, 1, seq, d), device)?;
                RopeTables::RotateHalf {
                    cos: a.cos()?,
                    sin: a.sin()?,
                }
            }
            RopeLayout::Interleaved => {
                let a = Tensor::from_vec(half, (seq, d / 2), device)?;
                RopeTables::Interleaved {
                    cos: a.cos()?,
                    sin: a.sin()?,
                }
            }
        })
    }

    /// Logits `(batch, seq, vocab)` of every position; `mask` is 1 for real tokens (padding on
    /// the right).
    pub fn forward(&self, input_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let device = input_ids.device();
        let rope = self.rope_tables(0, seq, device)?;
        let causal = super::nn::causal_bias(seq, 0, device)?;
        let bias = causal.broadcast_add(&super::nn::additive_mask(mask)?)?;
        let mut x = self.embed.forward(input_ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, &rope, &bias, None)?;
        }
        self.head(&x)
    }

    /// Logits `(1, seq, vocab)` of `input_ids` `(1, seq)` placed after the positions already
    /// in `cache`, which is extended with them (one sequence, no padding).
    pub fn forward_cached(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.cached(input_ids, cache, false)
    }

    /// [`Llama::forward_cached`] that runs the output head on the last position only: a
    /// shared context needs just the distribution after its last token, and the head is a
    /// quarter of a small model's work per position.
    pub fn forward_cached_last(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.cached(input_ids, cache, true)
    }

    fn cached(&self, input_ids: &Tensor, cache: &mut KvCache, last_only: bool) -> Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let device = input_ids.device();
        let past = cache.len;
        let rope = self.rope_tables(past, seq, device)?;
        let bias = super::nn::causal_bias(seq, past, device)?;
        let mut x = self.embed.forward(input_ids)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &rope, &bias, Some((&mut *cache, i)))?;
        }
        cache.len += seq;
        if last_only {
            return self.head(&x.narrow(1, seq - 1, 1)?);
        }
        self.head(&x)
    }

    /// Every linear layer, for `--student-quantize`.
    pub fn linears_mut(&mut self) -> Vec<&mut Lin> {
        let mut out: Vec<&mut Lin> = Vec::new();
        for l in &mut self.layers {
            out.extend([
                &mut l.q,
                &mut l.k,
                &mut l.v,
                &mut l.o,
                &mut l.gate,
                &mut l.up,
                &mut l.down,
            ]);
        }
        out.push(&mut self.lm_head);
        out
    }

    fn head(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.norm.forward(x)?;
        let (b, s, h) = x.dims3()?;
        self.lm_head
            .forward(&x.reshape((b * s, h))?)?
            .reshape((b, s, ()))?
            .to_dtype(DType::F32)
    }
}

/// This port's row in [`DECODERS`](super::decoder::DECODERS).
pub const ARCH: DecoderArch = DecoderArch {
    model_type: "llama",
    build: |raw, vb| build(raw, vb, false),
    max_positions: |_| None,
};

/// Qwen2 and Qwen2.5 (`Qwen2ForCausalLM`): Llama with biases on q, k and v.
pub const QWEN2_ARCH: DecoderArch = DecoderArch {
    model_type: "qwen2",
    build: |raw, vb| build(raw, vb, true),
    max_positions: sliding_window,
};

/// Mistral (`MistralForCausalLM`): Llama with a sliding attention window.
pub const MISTRAL_ARCH: DecoderArch = DecoderArch {
    model_type: "mistral",
    build: |raw, vb| build(raw, vb, false),
    max_positions: sliding_window,
};

/// The attention window, when the config turns one on: attention is computed over every
/// earlier position here, which equals the windowed model's only while a sequence fits the
/// window, so the window becomes the longest sequence the model takes (windows and requests
/// are cut to it, and say so).
fn sliding_window(raw: &serde_json::Value) -> Option<usize> {
    let window = raw.get("sliding_window").and_then(|v| v.as_u64())? as usize;
    let qwen = raw.get("model_type").and_then(|v| v.as_str()) == Some("qwen2");
    let on = raw
        .get("use_sliding_window")
        .and_then(|v| v.as_bool())
        .unwrap_or(!qwen);
    on.then_some(window)
}

fn build(
    raw: &serde_json::Value,
    vb: VarBuilder,
    qkv_bias: bool,
) -> std::result::Result<BuiltDecoder, BuildError> {
    let mut cfg: LlamaConfig = serde_json::from_value(raw.clone())?;
    cfg.qkv_bias = qkv_bias;
    Ok(BuiltDecoder {
        net: Box::new(Llama::load(vb, &cfg)?),
        max_positions: sliding_window(raw),
        vocab_size: cfg.vocab_size,
        hidden: cfg.hidden_size,
    })
}

impl DecoderNet for Llama {
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        Llama::forward(self, ids, mask)
    }
    fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        Llama::forward_cached(self, ids, cache)
    }
    fn forward_cached_last(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        Llama::forward_cached_last(self, ids, cache)
    }
    fn linears_mut(&mut self) -> Vec<&mut Lin> {
        Llama::linears_mut(self)
    }
}
