//! Llama-family decoders, ported from transformers' `models/llama/modeling_llama.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py>):
//! RMSNorm, rotary position embeddings (the `rotate_half` layout), grouped-query attention and
//! the gated feed-forward. Unlike candle-transformers' `llama`, `forward` returns the logits of
//! every position, which perplexity and per-token KL need.
//!
//! The relatives share the port and differ by the [`Flavor`] their architecture sets:
//! - `models/qwen2/modeling_qwen2.py` (Qwen2, Qwen2.5): biases on q, k and v;
//! - `models/mistral/modeling_mistral.py`: a sliding attention window on every layer, masked
//!   exactly (as Phi-3's when its config sets one, and Qwen's layers from `max_window_layers`
//!   on when `use_sliding_window`);
//! - `models/qwen3/modeling_qwen3.py`: an RMSNorm over each head of q and k before RoPE;
//! - `models/phi3/modeling_phi3.py`: q, k, v in one `qkv_proj` and gate and up in one
//!   `gate_up_proj` (split at load), RoPE over a `partial_rotary_factor` share of each head;
//! - `models/gemma2/modeling_gemma2.py` and `models/gemma3/modeling_gemma3.py`: embeddings
//!   scaled by sqrt(hidden), RMSNorms that scale by `1 + weight`, a norm after attention and
//!   after the feed-forward too, GELU (tanh) gating, scores scaled by
//!   `query_pre_attn_scalar^-1/2` and soft-capped (`attn_logit_softcapping`), soft-capped
//!   logits (`final_logit_softcapping`), and sliding-window layers (`layer_types`) masked
//!   exactly, since the full-attention layers between them see the whole sequence; Gemma 3
//!   adds Qwen3's q/k norms and its own RoPE base for the sliding layers.

use super::decoder::{BuiltDecoder, DecoderArch, DecoderNet};
use super::encoder::BuildError;
use super::linear::Lin;
use super::nn::KvCache;
use super::rope::{PositionLimits, Rope, RopeScaling};
use crate::kernels::decoder_ops::{residual_add, CausalAttention, RmsNormOp, RopeOp, SwiGluOp};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder};
use serde::Deserialize;

fn default_eps() -> f64 {
    1e-6
}

/// What sets a relative of Llama apart; chosen by the architecture (its `model_type`), not read
/// from `config.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flavor {
    /// Biases on q, k and v only (Qwen2).
    pub qkv_bias: bool,
    /// An RMSNorm over each head of q and k before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// `qkv_proj` and `gate_up_proj` instead of separate projections (Phi-3).
    pub fused_projections: bool,
    /// Gemma 2 / 3: scaled embeddings, `1 + weight` norms around both sublayers, softcaps.
    pub gemma: bool,
}

/// `config.json` of a Llama-family checkpoint. (`Default` is for settings read from elsewhere,
/// GGUF metadata, which fill in what they have.)
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// transformers 4 keeps `rope_theta` at the top level; 5 moves it into `rope_parameters`
    /// (one object, or for Gemma 3 one per layer type).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Gemma 3 (transformers 4): the RoPE base of the sliding-window layers.
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    /// Phi-3 (transformers 4 keeps it here, 5 in `rope_parameters`): the share of each head
    /// that RoPE rotates.
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Read by `yarn` and `longrope` scaling (Phi-3 keeps the pretrained length at the top
    /// level as `original_max_position_embeddings`).
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
    /// Per-pair divisors of the RoPE frequencies from a GGUF file's `rope_freqs.weight`
    /// (llama.cpp's form of Llama 3's scaling); not in config.json.
    #[serde(skip)]
    pub rope_divisors: Option<Vec<f32>>,
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
    /// Qwen2 / Qwen3: layers from this index on slide when `use_sliding_window`.
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    /// The architecture's `model_type` (its window rules differ: Mistral's and Phi-3's apply
    /// to every layer when set, Qwen's only with `use_sliding_window`).
    #[serde(default)]
    pub model_type: Option<String>,
    /// `full_attention` / `sliding_attention` per layer (Gemma; derived from
    /// `sliding_window_pattern` when absent).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default)]
    pub sliding_window_pattern: Option<usize>,
    /// `hidden_act` (Llama, Qwen, Phi-3; default silu) or `hidden_activation` (Gemma).
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub hidden_activation: Option<String>,
    /// Gemma: scores are scaled by `query_pre_attn_scalar^-1/2` instead of `head_dim^-1/2`.
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    /// Gemma 3: bidirectional attention (an embedding model), which a causal LM port refuses.
    #[serde(default)]
    pub use_bidirectional_attention: Option<bool>,
    /// What the architecture differs by; set by it, not read from config.json.
    #[serde(skip)]
    pub flavor: Flavor,
}

impl LlamaConfig {
    /// RoPE of the full-attention layers and of the sliding-window ones (the same but for
    /// Gemma 3).
    fn ropes(&self) -> Result<(Rope, Rope)> {
        let limits = PositionLimits {
            max: self.max_position_embeddings,
            original_max: self.original_max_position_embeddings,
        };
        let mut top = Rope::plain(self.rope_theta.unwrap_or(10000.0));
        if let Some(div) = &self.rope_divisors {
            top.scaling = RopeScaling::Divisors(div.clone());
        }
        let top = Rope::from_settings(self.rope_scaling.as_ref(), &top, limits)?;
        let params = self.rope_parameters.as_ref();
        let per_type = params.is_some_and(|p| p.get("full_attention").is_some());
        if per_type {
            let p = params.expect("checked");
            let full = Rope::from_settings(p.get("full_attention"), &top, limits)?;
            let local = Rope::plain(self.rope_local_base_freq.unwrap_or(full.theta));
            let local = Rope::from_settings(p.get("sliding_attention"), &local, limits)?;
            return Ok((full, local));
        }
        let full = Rope::from_settings(params, &top, limits)?;
        let local = match self.rope_local_base_freq {
            Some(theta) => Rope::plain(theta),
            None => full.clone(),
        };
        Ok((full, local))
    }

    /// Dimensions of each head that RoPE rotates (even).
    fn rotary_dim(&self) -> usize {
        let from_params = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get("partial_rotary_factor"))
            .and_then(|f| f.as_f64());
        let factor = from_params.or(self.partial_rotary_factor).unwrap_or(1.0);
        ((self.head_dim() as f64 * factor) as usize) & !1
    }

    /// Whether each layer attends through a sliding window, as transformers decides: the
    /// config's `layer_types` when it has them; else Gemma's pattern (Gemma 2 alternates,
    /// Gemma 3 has a full layer every `sliding_window_pattern`), Qwen's layers from
    /// `max_window_layers` on when `use_sliding_window`, and every layer of Mistral and Phi-3
    /// when they set a window.
    fn sliding_layers(&self) -> Result<Vec<bool>> {
        let n = self.num_hidden_layers;
        let Some(_) = self.sliding_window else {
            return Ok(vec![false; n]);
        };
        let qwen = matches!(self.model_type.as_deref(), Some("qwen2" | "qwen3"));
        if qwen && self.use_sliding_window != Some(true) {
            return Ok(vec![false; n]);
        }
        if let Some(types) = &self.layer_types {
            if types.len() != n {
                candle_core::bail!("layer_types has {} entries for {n} layers", types.len());
            }
            return types
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => candle_core::bail!("layer type '{other}' is not supported"),
                })
                .collect();
        }
        if self.flavor.gemma {
            // Gemma 2 alternates; Gemma 3 has a full layer every `sliding_window_pattern`.
            let pattern = self.sliding_window_pattern.unwrap_or(2);
            return Ok((0..n).map(|i| (i + 1) % pattern != 0).collect());
        }
        if qwen {
            let from = self.max_window_layers.unwrap_or(28);
            return Ok((0..n).map(|i| i >= from).collect());
        }
        Ok(vec![true; n])
    }

    fn activation(&self) -> Result<super::nn::Activation> {
        let name = self
            .hidden_activation
            .as_deref()
            .or(self.hidden_act.as_deref())
            .unwrap_or(if self.flavor.gemma {
                "gelu_pytorch_tanh"
            } else {
                "silu"
            });
        super::nn::Activation::parse(name).map_err(candle_core::Error::msg)
    }

    fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
}

/// `LlamaRMSNorm`: `x / sqrt(mean(x^2) + eps) * weight`; Gemma's scales by `1 + weight`
/// (added once at load).
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

    fn load_for(size: usize, cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let mut norm = Self::load(size, cfg.rms_norm_eps, vb)?;
        if cfg.flavor.gemma {
            norm.weight = (norm.weight + 1.0)?;
        }
        Ok(norm)
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if fused(x) {
            return x.contiguous()?.apply_op2_no_bwd(
                &self.weight,
                &RmsNormOp {
                    eps: self.eps as f32,
                },
            );
        }
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)
    }
}

/// A bias-free projection `(out, in)`: f32, or kept quantized (GGUF blocks, multiplied by
/// candle's quantized kernels without dequantizing).
pub type Proj = Lin;

/// Projections kept as stored in a GGUF file, by their transformers name (`model.layers.0.
/// self_attn.q_proj.weight`); the loader takes a projection from here before the VarBuilder.
pub type QuantizedWeights = std::collections::HashMap<String, QTensor>;

/// Where a model's weights come from: f32 tensors by name, and projections kept quantized.
#[derive(Clone)]
struct Source<'a> {
    vb: VarBuilder<'a>,
    /// Taken out as each projection is built (a `QTensor` is not `Clone`).
    quantized: &'a std::cell::RefCell<QuantizedWeights>,
}

impl<'a> Source<'a> {
    fn pp(&self, name: impl ToString) -> Source<'a> {
        Source {
            vb: self.vb.pp(name),
            quantized: self.quantized,
        }
    }

    /// The quantized `weight` at this prefix, if the file keeps it so.
    fn quantized_weight(&self) -> Option<QTensor> {
        self.quantized
            .borrow_mut()
            .remove(&format!("{}.weight", self.vb.prefix()))
    }

    /// A projection `(out_dim, in_dim)`, with its f32 bias when `bias`.
    fn proj(&self, in_dim: usize, out_dim: usize, bias: bool) -> Result<Proj> {
        if let Some(q) = self.quantized_weight() {
            let b = if bias {
                Some(self.vb.get(out_dim, "bias")?)
            } else {
                None
            };
            return Lin::from_qtensor(q, b);
        }
        if bias {
            super::linear::linear(in_dim, out_dim, self.vb.clone())
        } else {
            super::linear::linear_no_bias(in_dim, out_dim, self.vb.clone())
        }
    }

    /// `parts` row blocks of one fused `(sum of parts, in)` weight, each a bias-free projection
    /// (quantized blocks are split by rows as stored, so the numbers do not change).
    fn split(&self, in_dim: usize, parts: &[usize]) -> Result<Vec<Proj>> {
        if let Some(q) = self.quantized_weight() {
            let mut start = 0;
            return parts
                .iter()
                .map(|&n| {
                    let rows = quantized_rows(&q, start, n)?;
                    start += n;
                    Lin::from_qtensor(rows, None)
                })
                .collect();
        }
        let w = self
            .vb
            .get((parts.iter().sum::<usize>(), in_dim), "weight")?;
        let mut start = 0;
        parts
            .iter()
            .map(|&n| {
                let part = w.narrow(0, start, n)?.contiguous()?;
                start += n;
                Ok(Lin::new(part, None))
            })
            .collect()
    }
}

/// Rows `start..start + n` of a quantized `(rows, cols)` tensor: each row is a whole number of
/// blocks, stored one row after another. (All rows: a copy.)
pub fn quantized_rows(q: &QTensor, start: usize, n: usize) -> Result<QTensor> {
    let (rows, cols) = q.shape().dims2()?;
    if start + n > rows {
        candle_core::bail!("rows {start}..{} of a {rows}-row tensor", start + n);
    }
    let data = q.data()?;
    let row_bytes = data.len() / rows;
    candle_core::quantized::ggml_file::qtensor_from_ggml(
        q.dtype(),
        &data[start * row_bytes..(start + n) * row_bytes],
        vec![n, cols],
        &q.device(),
    )
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

struct Layer {
    input_norm: RmsNorm,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    /// Before the feed-forward: Llama's `post_attention_layernorm`, Gemma's
    /// `pre_feedforward_layernorm`.
    post_norm: RmsNorm,
    gate: Proj,
    up: Proj,
    down: Proj,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Qwen3 / Gemma 3: `q_norm` and `k_norm`, over each head.
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    /// Gemma: the norms of the attention output and of the feed-forward output.
    sandwich: Option<(RmsNorm, RmsNorm)>,
    act: super::nn::Activation,
    /// Scores are divided by this: sqrt(head_dim), or Gemma's sqrt(query_pre_attn_scalar).
    score_div: f64,
    attn_softcap: Option<f64>,
    /// This layer attends through the sliding window (its RoPE and mask are the local ones).
    sliding: bool,
}

/// cos and sin for the positions of one forward pass, shaped for the layout, and as
/// `(seq, rotary_dim / 2)` tables for the fused CPU op ([`RopeOp`]).
struct RopeTables {
    layout: Tables,
    half_cos: Tensor,
    half_sin: Tensor,
}

enum Tables {
    RotateHalf { cos: Tensor, sin: Tensor },
    Interleaved { cos: Tensor, sin: Tensor },
}

impl RopeTables {
    /// Rotate `(batch, seq, heads * head_dim)` projections in place of their layout (CPU).
    fn apply_rows(&self, x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
        x.contiguous()?.apply_op3_no_bwd(
            &self.half_cos,
            &self.half_sin,
            &RopeOp {
                heads,
                head_dim,
                interleaved: matches!(self.layout, Tables::Interleaved { .. }),
            },
        )
    }

    /// Rotate `(batch, heads, seq, head_dim)` heads with candle's ops (any device).
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match &self.layout {
            Tables::RotateHalf { cos, sin } => {
                let (rot, d) = (cos.dim(D::Minus1)?, x.dim(D::Minus1)?);
                if rot < d {
                    // Partial rotary (Phi-3): the rest of each head passes through.
                    let (xr, pass) = (
                        x.narrow(D::Minus1, 0, rot)?,
                        x.narrow(D::Minus1, rot, d - rot)?,
                    );
                    let xr = (xr.broadcast_mul(cos)? + rotate_half(&xr)?.broadcast_mul(sin)?)?;
                    return Tensor::cat(&[&xr, &pass], D::Minus1);
                }
                x.broadcast_mul(cos)? + rotate_half(x)?.broadcast_mul(sin)?
            }
            Tables::Interleaved { cos, sin } => {
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
    fn load(src: Source, cfg: &LlamaConfig, sliding: bool) -> Result<Self> {
        let vb = src.vb.clone();
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let kv = cfg.num_key_value_heads.unwrap_or(cfg.num_attention_heads);
        let qd = cfg.num_attention_heads * d;
        let attn = src.pp("self_attn");
        let mlp = src.pp("mlp");
        let f = cfg.flavor;
        let qkv_bias = f.qkv_bias || cfg.attention_bias;
        let (q, k, v) = if f.fused_projections {
            let mut p = attn
                .pp("qkv_proj")
                .split(h, &[qd, kv * d, kv * d])?
                .into_iter();
            (p.next().unwrap(), p.next().unwrap(), p.next().unwrap())
        } else {
            (
                attn.pp("q_proj").proj(h, qd, qkv_bias)?,
                attn.pp("k_proj").proj(h, kv * d, qkv_bias)?,
                attn.pp("v_proj").proj(h, kv * d, qkv_bias)?,
            )
        };
        let i = cfg.intermediate_size;
        let (gate, up) = if f.fused_projections {
            let mut p = mlp.pp("gate_up_proj").split(h, &[i, i])?.into_iter();
            (p.next().unwrap(), p.next().unwrap())
        } else {
            (
                mlp.pp("gate_proj").proj(h, i, false)?,
                mlp.pp("up_proj").proj(h, i, false)?,
            )
        };
        let norm = |size: usize, name: &str| RmsNorm::load_for(size, cfg, vb.pp(name));
        let qk_norm = if f.qk_norm {
            Some((
                RmsNorm::load_for(d, cfg, attn.vb.pp("q_norm"))?,
                RmsNorm::load_for(d, cfg, attn.vb.pp("k_norm"))?,
            ))
        } else {
            None
        };
        let (post_norm, sandwich) = if f.gemma {
            (
                norm(h, "pre_feedforward_layernorm")?,
                Some((
                    norm(h, "post_attention_layernorm")?,
                    norm(h, "post_feedforward_layernorm")?,
                )),
            )
        } else {
            (norm(h, "post_attention_layernorm")?, None)
        };
        let score_div = match (f.gemma, cfg.query_pre_attn_scalar) {
            (true, Some(s)) => s.sqrt(),
            _ => (d as f64).sqrt(),
        };
        Ok(Layer {
            input_norm: norm(h, "input_layernorm")?,
            q,
            k,
            v,
            o: attn.pp("o_proj").proj(qd, h, cfg.attention_bias)?,
            post_norm,
            gate,
            up,
            down: mlp.pp("down_proj").proj(i, h, false)?,
            heads: cfg.num_attention_heads,
            kv_heads: kv,
            head_dim: d,
            qk_norm,
            sandwich,
            act: cfg.activation()?,
            score_div,
            attn_softcap: cfg.attn_logit_softcapping.filter(|_| f.gemma),
            sliding,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        mask: &LayerMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        if fused(x) {
            return self.forward_fused(x, rope, mask, cache);
        }
        let bias = mask.bias;
        let (b, s, _) = x.dims3()?;
        let n = self.input_norm.forward(x)?;
        let split = |t: Tensor, heads: usize| -> Result<Tensor> {
            t.reshape((b, s, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (mut q, mut k) = (
            split(self.q.forward(&n)?, self.heads)?,
            split(self.k.forward(&n)?, self.kv_heads)?,
        );
        if let Some((qn, kn)) = &self.qk_norm {
            (q, k) = (qn.forward(&q)?, kn.forward(&k)?);
        }
        let (q, k) = (rope.apply(&q)?, rope.apply(&k)?);
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
        let mut scores = (q.matmul(&k.t()?)? / self.score_div)?;
        if let Some(cap) = self.attn_softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(bias)?)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, s, self.heads * self.head_dim))?;
        self.finish(x, &ctx)
    }

    /// [`Layer::forward`] on the CPU in f32 through the fused ops of `decoder_ops`: the
    /// projections stay `(batch, seq, heads * head_dim)` throughout (no transposes, no
    /// repeated KV heads) and the cache holds keys and values in that layout.
    fn forward_fused(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        mask: &LayerMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let d = self.head_dim;
        let n = self.input_norm.forward(x)?;
        let (mut q, mut k) = (self.q.forward(&n)?, self.k.forward(&n)?);
        if let Some((qn, kn)) = &self.qk_norm {
            let per_head = |norm: &RmsNorm, t: &Tensor, heads: usize| {
                norm.forward(&t.reshape((b, s, heads, d))?)?
                    .reshape((b, s, heads * d))
            };
            (q, k) = (
                per_head(qn, &q, self.heads)?,
                per_head(kn, &k, self.kv_heads)?,
            );
        }
        let q = rope.apply_rows(&q, self.heads, d)?;
        let k = rope.apply_rows(&k, self.kv_heads, d)?;
        let v = self.v.forward(&n)?.contiguous()?;
        let (k, v) = match cache {
            Some((c, i)) => c.extend_on(i, k, v, 1)?,
            None => (k, v),
        };
        let ctx = q.apply_op3_no_bwd(
            &k,
            &v,
            &CausalAttention {
                heads: self.heads,
                kv_heads: self.kv_heads,
                head_dim: d,
                scale: (1.0 / self.score_div) as f32,
                softcap: self.attn_softcap.map(|c| c as f32),
                window: mask.window,
                key_valid: mask.key_valid,
                candle_softmax: false,
            },
        )?;
        self.finish(x, &ctx)
    }

    /// The output projection, the residual, and the feed-forward block.
    fn finish(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let mut attn = self.o.forward(ctx)?;
        if let Some((after_attn, _)) = &self.sandwich {
            attn = after_attn.forward(&attn)?;
        }
        let x = residual_add(x, &attn)?;
        let n = self.post_norm.forward(&x)?;
        let (gate, up) = (self.gate.forward(&n)?, self.up.forward(&n)?);
        let hidden = match self.act {
            super::nn::Activation::Silu if fused(&gate) => gate
                .contiguous()?
                .apply_op2_no_bwd(&up.contiguous()?, &SwiGluOp)?,
            _ => (self.act.forward(&gate)? * up)?,
        };
        let mut ff = self.down.forward(&hidden)?;
        if let Some((_, after_ff)) = &self.sandwich {
            ff = after_ff.forward(&ff)?;
        }
        residual_add(&x, &ff)
    }
}

/// Whether a tensor takes the fused CPU ops of `decoder_ops` (f32 on the CPU).
fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// What one layer masks: the additive bias `(batch or 1, 1, seq, keys)` for candle's ops, and
/// the same as parameters for the fused attention.
struct LayerMask<'a> {
    bias: &'a Tensor,
    /// The sliding window of this layer (Gemma's local layers).
    window: Option<usize>,
    /// `batch * keys`: false for padding.
    key_valid: Option<&'a [bool]>,
}

/// `LlamaForCausalLM`.
pub struct Llama {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Proj,
    /// Dimensions of each head that RoPE rotates.
    rotary_dim: usize,
    /// RoPE of the full-attention layers and of the sliding-window ones.
    ropes: (Rope, Rope),
    rope: RopeLayout,
    /// Gemma: embeddings are multiplied by sqrt(hidden).
    embed_scale: Option<f64>,
    final_softcap: Option<f64>,
    /// The window of the sliding layers (Gemma), masked exactly.
    window: Option<usize>,
}

impl Llama {
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        Self::load_with(vb, cfg, QuantizedWeights::new(), RopeLayout::RotateHalf)
    }

    /// [`Llama::load`] taking the projections in `quantized` as stored (GGUF files), with RoPE
    /// pairing dimensions as `rope` says (llama.cpp permutes Llama's Q/K rows for
    /// [`RopeLayout::Interleaved`]).
    pub fn load_with(
        vb: VarBuilder,
        cfg: &LlamaConfig,
        quantized: QuantizedWeights,
        rope: RopeLayout,
    ) -> Result<Self> {
        if cfg.use_bidirectional_attention == Some(true) {
            candle_core::bail!("use_bidirectional_attention: an embedding model, not a causal LM");
        }
        let quantized = std::cell::RefCell::new(quantized);
        let src = Source {
            vb: vb.clone(),
            quantized: &quantized,
        };
        let base = vb.pp("model");
        let sliding = cfg.sliding_layers()?;
        let embed = candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, base.pp("embed_tokens"))?;
        // A tied output projection stays in candle's layout, sharing the embedding table.
        let lm_head = if let Some(q) = quantized.borrow_mut().remove("lm_head.weight") {
            Lin::from_qtensor(q, None)?
        } else if !cfg.tie_word_embeddings && vb.contains_tensor("lm_head.weight") {
            Lin::new(
                vb.get((cfg.vocab_size, cfg.hidden_size), "lm_head.weight")?,
                None,
            )
        } else {
            Lin::tied(embed.embeddings().clone(), None)
        };
        let gemma = cfg.flavor.gemma;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(src.pp("model.layers").pp(i), cfg, sliding[i]))
            .collect::<Result<Vec<_>>>()?;
        // A projection the port did not ask for is a tensor it would silently ignore.
        let mut left: Vec<String> = quantized.borrow().keys().cloned().collect();
        if !left.is_empty() {
            left.sort();
            candle_core::bail!("tensors the model does not use: {}", left.join(", "));
        }
        Ok(Llama {
            layers,
            norm: RmsNorm::load_for(cfg.hidden_size, cfg, base.pp("norm"))?,
            embed,
            lm_head,
            rotary_dim: cfg.rotary_dim(),
            ropes: cfg.ropes()?,
            rope,
            embed_scale: gemma.then(|| (cfg.hidden_size as f64).sqrt()),
            final_softcap: cfg.final_logit_softcapping.filter(|_| gemma),
            window: cfg.sliding_window.filter(|_| sliding.iter().any(|&s| s)),
        })
    }

    /// cos and sin for positions `past..past + seq` of the full-attention layers and, when
    /// they differ (Gemma 3), of the sliding ones.
    fn rope_pair(
        &self,
        past: usize,
        seq: usize,
        device: &Device,
    ) -> Result<(RopeTables, Option<RopeTables>)> {
        let (full, local) = &self.ropes;
        let local = if local != full && self.layers.iter().any(|l| l.sliding) {
            Some(self.rope_tables(local, past, seq, device)?)
        } else {
            None
        };
        Ok((self.rope_tables(full, past, seq, device)?, local))
    }

    /// cos and sin for positions `past..past + seq`: `(1, 1, seq, rotary_dim)` with the two
    /// halves repeated for `rotate_half`, `(seq, head_dim / 2)` for the interleaved kernel.
    fn rope_tables(
        &self,
        r: &Rope,
        past: usize,
        seq: usize,
        device: &Device,
    ) -> Result<RopeTables> {
        let d = self.rotary_dim;
        let (inv, attention_factor) = r.frequencies(d, past + seq)?;
        let half: Vec<f32> = (past..past + seq)
            .flat_map(|p| inv.iter().map(move |f| p as f32 * f))
            .collect();
        let a = Tensor::from_vec(half, (seq, d / 2), device)?;
        let (mut half_cos, mut half_sin) = (a.cos()?, a.sin()?);
        // yarn and longrope scale cos and sin (transformers' `attention_scaling`).
        if attention_factor != 1.0 {
            half_cos = (half_cos * attention_factor as f64)?;
            half_sin = (half_sin * attention_factor as f64)?;
        }
        let layout = match self.rope {
            RopeLayout::RotateHalf => {
                let (cos, sin) = (
                    Tensor::cat(&[&half_cos, &half_cos], 1)?.reshape((1, 1, seq, d))?,
                    Tensor::cat(&[&half_sin, &half_sin], 1)?.reshape((1, 1, seq, d))?,
                );
                Tables::RotateHalf { cos, sin }
            }
            RopeLayout::Interleaved => Tables::Interleaved {
                cos: half_cos.clone(),
                sin: half_sin.clone(),
            },
        };
        Ok(RopeTables {
            layout,
            half_cos,
            half_sin,
        })
    }

    /// Logits `(batch, seq, vocab)` of every position; `mask` is 1 for real tokens (padding on
    /// the right).
    pub fn forward(&self, input_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let device = input_ids.device();
        let ropes = self.rope_pair(0, seq, device)?;
        let padding = super::nn::additive_mask(mask)?;
        let causal = super::nn::causal_bias(seq, 0, device)?.broadcast_add(&padding)?;
        let windowed = self
            .window
            .map(|w| super::nn::sliding_causal_bias(seq, 0, w, device)?.broadcast_add(&padding))
            .transpose()?;
        let valid = super::nn::key_valid(mask)?;
        let mut x = self.embed(input_ids)?;
        for layer in &self.layers {
            let (rope, mut mask) = self.for_layer(layer, &ropes, &causal, windowed.as_ref());
            mask.key_valid = Some(&valid);
            x = layer.forward(&x, rope, &mask, None)?;
        }
        self.head(&x)
    }

    /// The RoPE tables and mask a layer uses: the sliding ones for a sliding layer.
    fn for_layer<'a>(
        &self,
        layer: &Layer,
        ropes: &'a (RopeTables, Option<RopeTables>),
        causal: &'a Tensor,
        windowed: Option<&'a Tensor>,
    ) -> (&'a RopeTables, LayerMask<'a>) {
        let mut mask = LayerMask {
            bias: causal,
            window: None,
            key_valid: None,
        };
        if !layer.sliding {
            return (&ropes.0, mask);
        }
        if let Some(w) = windowed {
            (mask.bias, mask.window) = (w, self.window);
        }
        (ropes.1.as_ref().unwrap_or(&ropes.0), mask)
    }

    fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        let x = self.embed.forward(input_ids)?;
        match self.embed_scale {
            Some(s) => x * s,
            None => Ok(x),
        }
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
        let ropes = self.rope_pair(past, seq, device)?;
        let causal = super::nn::causal_bias(seq, past, device)?;
        let windowed = self
            .window
            .map(|w| super::nn::sliding_causal_bias(seq, past, w, device))
            .transpose()?;
        let mut x = self.embed(input_ids)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let (rope, mask) = self.for_layer(layer, &ropes, &causal, windowed.as_ref());
            x = layer.forward(&x, rope, &mask, Some((&mut *cache, i)))?;
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
        let logits = self
            .lm_head
            .forward(&x.reshape((b * s, h))?)?
            .reshape((b, s, ()))?
            .to_dtype(DType::F32)?;
        match self.final_softcap {
            Some(cap) => (logits / cap)?.tanh()? * cap,
            None => Ok(logits),
        }
    }
}

/// This port's row in [`DECODERS`](super::decoder::DECODERS).
pub const ARCH: DecoderArch = DecoderArch {
    model_type: "llama",
    build: |raw, vb| build(raw, vb, Flavor::default()),
    max_positions: |_| None,
};

/// Qwen2 and Qwen2.5 (`Qwen2ForCausalLM`): Llama with biases on q, k and v.
pub const QWEN2_ARCH: DecoderArch = DecoderArch {
    model_type: "qwen2",
    build: |raw, vb| {
        let flavor = Flavor {
            qkv_bias: true,
            ..Flavor::default()
        };
        build(raw, vb, flavor)
    },
    max_positions: |_| None,
};

/// Mistral (`MistralForCausalLM`): Llama with a sliding attention window.
pub const MISTRAL_ARCH: DecoderArch = DecoderArch {
    model_type: "mistral",
    build: |raw, vb| build(raw, vb, Flavor::default()),
    max_positions: |_| None,
};

/// Qwen3 (`Qwen3ForCausalLM`): Llama with an RMSNorm over each head of q and k.
pub const QWEN3_ARCH: DecoderArch = DecoderArch {
    model_type: "qwen3",
    build: |raw, vb| {
        let flavor = Flavor {
            qk_norm: true,
            ..Flavor::default()
        };
        build(raw, vb, flavor)
    },
    max_positions: |_| None,
};

/// Phi-3 and Phi-4-mini (`Phi3ForCausalLM`): fused projections, partial rotary.
pub const PHI3_ARCH: DecoderArch = DecoderArch {
    model_type: "phi3",
    build: |raw, vb| {
        let flavor = Flavor {
            fused_projections: true,
            ..Flavor::default()
        };
        build(raw, vb, flavor)
    },
    max_positions: |_| None,
};

/// Gemma 2 (`Gemma2ForCausalLM`).
pub const GEMMA2_ARCH: DecoderArch = DecoderArch {
    model_type: "gemma2",
    build: |raw, vb| {
        let flavor = Flavor {
            gemma: true,
            ..Flavor::default()
        };
        build(raw, vb, flavor)
    },
    max_positions: |_| None,
};

/// Gemma 3's flavor: Gemma 2's plus q/k norms.
const GEMMA3: Flavor = Flavor {
    gemma: true,
    qk_norm: true,
    qkv_bias: false,
    fused_projections: false,
};

/// transformers' `Gemma3TextConfig` defaults, for the keys a config leaves out (the Hub's
/// Gemma 3 4B / 12B / 27B `text_config`s name little more than their sizes and RoPE scaling).
fn with_gemma3_defaults(text: &serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::json!({
        "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216,
        "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 131_072, "rms_norm_eps": 1e-6, "tie_word_embeddings": true,
        "query_pre_attn_scalar": 256, "sliding_window": 4096, "sliding_window_pattern": 6,
        // `default_theta`: global and local bases.
        "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0,
    });
    if let (Some(o), Some(given)) = (out.as_object_mut(), text.as_object()) {
        for (k, v) in given {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Gemma 3's text model (`Gemma3ForCausalLM`, `model_type` `gemma3_text`: the 1B model, or
/// the language half of the larger ones saved alone).
pub const GEMMA3_ARCH: DecoderArch = DecoderArch {
    model_type: "gemma3_text",
    build: |raw, vb| build(&with_gemma3_defaults(raw), vb, GEMMA3),
    max_positions: |_| None,
};

/// Gemma 3 4B / 12B / 27B as published (`Gemma3ForConditionalGeneration`, `model_type`
/// `gemma3`): the language model of `text_config`, with its weights under
/// `language_model.model.*` (the Hub's files) or `model.language_model.*` (transformers 5's
/// names); the vision tower is not loaded, as the harness's tasks are text.
pub const GEMMA3_MULTIMODAL_ARCH: DecoderArch = DecoderArch {
    model_type: "gemma3",
    build: |raw, vb| {
        let text = raw.get("text_config").ok_or_else(|| {
            BuildError::Config(serde::de::Error::custom(
                "model_type gemma3 without a text_config",
            ))
        })?;
        let prefix = MULTIMODAL_PREFIXES
            .iter()
            .find(|p| vb.contains_tensor(&format!("{p}embed_tokens.weight")))
            .ok_or_else(|| {
                BuildError::Weights(candle_core::Error::msg(format!(
                    "no language model weights (looked for {}embed_tokens.weight)",
                    MULTIMODAL_PREFIXES.join("embed_tokens.weight, ")
                )))
            })?;
        let vb = vb.rename_f(move |name: &str| match name.strip_prefix("model.") {
            Some(rest) => format!("{prefix}{rest}"),
            None => name.to_string(),
        });
        let mut text = with_gemma3_defaults(text);
        // transformers' Gemma3ForConditionalGeneration does not soft-cap its logits (only
        // Gemma3ForCausalLM does); the released configs set no cap either way.
        text["final_logit_softcapping"] = serde_json::Value::Null;
        build(&text, vb, GEMMA3)
    },
    max_positions: |_| None,
};

/// Where a multimodal checkpoint keeps its language model's `model.*` tensors.
pub const MULTIMODAL_PREFIXES: [&str; 2] = ["language_model.model.", "model.language_model."];

fn build(
    raw: &serde_json::Value,
    vb: VarBuilder,
    flavor: Flavor,
) -> std::result::Result<BuiltDecoder, BuildError> {
    let mut cfg: LlamaConfig = serde_json::from_value(raw.clone())?;
    cfg.flavor = flavor;
    Ok(BuiltDecoder {
        net: Box::new(Llama::load(vb, &cfg)?),
        // Sliding windows are masked exactly: no length limit.
        max_positions: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value, flavor: Flavor) -> LlamaConfig {
        let mut raw = serde_json::json!({
            "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 6, "num_attention_heads": 2,
        });
        raw.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let mut cfg: LlamaConfig = serde_json::from_value(raw).unwrap();
        cfg.flavor = flavor;
        cfg
    }

    #[test]
    fn rope_settings_are_read_in_every_spelling_and_unknown_types_refused() {
        let plain = Flavor::default();
        let rope = |theta, factor: f64| Rope {
            theta,
            scaling: if factor == 1.0 {
                RopeScaling::None
            } else {
                RopeScaling::Linear { factor }
            },
        };
        // transformers 4: top-level theta, linear scaling in rope_scaling (old key `type`).
        let cfg = config(
            serde_json::json!({"rope_theta": 500.0, "rope_scaling": {"type": "linear", "factor": 4.0}}),
            plain,
        );
        assert_eq!(cfg.ropes().unwrap(), (rope(500.0, 4.0), rope(500.0, 4.0)));
        // transformers 5: one rope_parameters object.
        let cfg = config(
            serde_json::json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}),
            plain,
        );
        assert_eq!(cfg.ropes().unwrap().0, rope(1e6, 1.0));
        // Gemma 3, both spellings: a base of its own for the sliding layers.
        let cfg = config(
            serde_json::json!({"rope_theta": 1e6, "rope_local_base_freq": 1e4}),
            plain,
        );
        assert_eq!(cfg.ropes().unwrap(), (rope(1e6, 1.0), rope(1e4, 1.0)));
        let cfg = config(
            serde_json::json!({"rope_parameters": {
                "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}),
            plain,
        );
        assert_eq!(cfg.ropes().unwrap(), (rope(1e6, 8.0), rope(1e4, 1.0)));
        // Llama 3's scaling, as Llama 3.2 writes it in transformers 4's spelling.
        let cfg = config(
            serde_json::json!({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3",
                "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}}),
            plain,
        );
        let (full, _) = cfg.ropes().unwrap();
        assert_eq!(full.theta, 500000.0);
        assert!(matches!(
            full.scaling,
            RopeScaling::Llama3 { factor, .. } if factor == 32.0
        ));
        // Phi-3 128k: longrope reads the lengths at the top level.
        let cfg = config(
            serde_json::json!({"max_position_embeddings": 131072,
                "original_max_position_embeddings": 4096,
                "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.0], "long_factor": [2.0, 4.0]}}),
            plain,
        );
        assert!(matches!(
            cfg.ropes().unwrap().0.scaling,
            RopeScaling::LongRope {
                original_max: 4096,
                ..
            }
        ));
        // GGUF divisors apply when config.json says nothing else.
        let mut cfg = config(serde_json::json!({}), plain);
        cfg.rope_divisors = Some(vec![1.0, 8.0]);
        assert_eq!(
            cfg.ropes().unwrap().0.scaling,
            RopeScaling::Divisors(vec![1.0, 8.0])
        );
        // Types the port does not know are refused by name rather than run wrong.
        let cfg = config(
            serde_json::json!({"rope_scaling": {"rope_type": "dynamic", "factor": 8.0}}),
            plain,
        );
        let err = cfg.ropes().unwrap_err().to_string();
        assert!(
            err.contains("rope_type 'dynamic' is not supported"),
            "{err}"
        );
        // Phi-3's partial rotary, in either place; rounded down to an even width.
        let cfg = config(serde_json::json!({"partial_rotary_factor": 0.75}), plain);
        assert_eq!(cfg.rotary_dim(), 2);
        let cfg = config(
            serde_json::json!({"rope_parameters": {"rope_theta": 1e4, "partial_rotary_factor": 0.5}}),
            plain,
        );
        assert_eq!(cfg.rotary_dim(), 2);
        assert_eq!(config(serde_json::json!({}), plain).rotary_dim(), 4);
    }

    #[test]
    fn a_sparse_gemma3_text_config_takes_transformers_defaults() {
        // google/gemma-3-4b-pt's text_config, as published: sizes and RoPE scaling only.
        let sparse = serde_json::json!({"hidden_size": 2560, "intermediate_size": 10240,
            "model_type": "gemma3_text", "num_hidden_layers": 34,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024});
        let mut cfg: LlamaConfig = serde_json::from_value(with_gemma3_defaults(&sparse)).unwrap();
        cfg.flavor = GEMMA3;
        assert_eq!(
            (cfg.vocab_size, cfg.num_attention_heads, cfg.head_dim()),
            (262_208, 8, 256)
        );
        assert_eq!(cfg.num_key_value_heads, Some(4));
        assert_eq!(cfg.query_pre_attn_scalar, Some(256.0));
        assert_eq!(cfg.sliding_window, Some(1024));
        assert!(cfg.tie_word_embeddings);
        // Global layers at 1e6 with the linear factor, local ones at 1e4 unscaled.
        let (full, local) = cfg.ropes().unwrap();
        assert_eq!(full.theta, 1e6);
        assert_eq!(full.scaling, RopeScaling::Linear { factor: 8.0 });
        assert_eq!(local, Rope::plain(1e4));
        let sliding = cfg.sliding_layers().unwrap();
        assert_eq!(sliding.iter().filter(|s| !**s).count(), 5);
        assert!(!sliding[5] && sliding[0] && sliding[6]);
    }

    #[test]
    fn sliding_layers_follow_layer_types_the_pattern_or_each_relatives_rule() {
        let gemma = Flavor {
            gemma: true,
            ..Flavor::default()
        };
        let window = serde_json::json!({"sliding_window": 4});
        // Gemma 2 without layer_types alternates; Gemma 3's pattern puts a full layer sixth.
        assert_eq!(
            config(window.clone(), gemma).sliding_layers().unwrap(),
            [true, false, true, false, true, false]
        );
        let with_pattern = serde_json::json!({"sliding_window": 4, "sliding_window_pattern": 6});
        assert_eq!(
            config(with_pattern, gemma).sliding_layers().unwrap(),
            [true, true, true, true, true, false]
        );
        // Mistral and Phi-3: every layer slides when a window is set.
        assert_eq!(
            config(window, Flavor::default()).sliding_layers().unwrap(),
            [true; 6]
        );
        // Qwen: only with use_sliding_window, from max_window_layers on.
        let qwen =
            serde_json::json!({"model_type": "qwen2", "sliding_window": 4, "max_window_layers": 4});
        assert_eq!(
            config(qwen.clone(), Flavor::default())
                .sliding_layers()
                .unwrap(),
            [false; 6]
        );
        let mut on = qwen;
        on["use_sliding_window"] = serde_json::json!(true);
        assert_eq!(
            config(on, Flavor::default()).sliding_layers().unwrap(),
            [false, false, false, false, true, true]
        );
        assert_eq!(
            config(serde_json::json!({}), Flavor::default())
                .sliding_layers()
                .unwrap(),
            [false; 6]
        );
        let wrong = serde_json::json!({"sliding_window": 4, "layer_types": ["full_attention"]});
        let err = config(wrong, gemma)
            .sliding_layers()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("layer_types has 1 entries for 6 layers"),
            "{err}"
        );
    }
}
