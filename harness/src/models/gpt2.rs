//! GPT-2 (absent from candle-transformers; DistilGPT-2 shares the architecture), ported from
//! transformers' `models/gpt2/modeling_gpt2.py`
//! (https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py).
//!
//! `forward` returns the logits of every position, which perplexity needs (candle-transformers'
//! causal LMs return only the last position). GPT-2's `Conv1D` stores weights as `(in, out)`,
//! so they multiply as they are, without a transpose.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

use super::layers::{self, Activation};

fn default_act() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}

/// `config.json` of a GPT-2 checkpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// Feed-forward width; `None` means 4 x `n_embd`.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
}

/// GPT-2's `Conv1D`: `x @ weight + bias` with `weight` of shape `(in, out)`.
struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    fn load(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Conv1D {
            weight: vb.get_with_hints(
                (in_dim, out_dim),
                "weight",
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
            )?,
            bias: vb.get_with_hints(out_dim, "bias", candle_nn::Init::Const(0.0))?,
        })
    }
}

impl Module for Conv1D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, s, k) = x.dims3()?;
        x.reshape((b * s, k))?
            .matmul(&self.weight)?
            .broadcast_add(&self.bias)?
            .reshape((b, s, ()))
    }
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Conv1D,
    c_proj: Conv1D,
    ln_2: LayerNorm,
    c_fc: Conv1D,
    mlp_proj: Conv1D,
    heads: usize,
    act: Activation,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &Gpt2Config, act: Activation) -> Result<Self> {
        let (h, inner) = (cfg.n_embd, cfg.n_inner.unwrap_or(4 * cfg.n_embd));
        Ok(Block {
            ln_1: layers::layer_norm(h, cfg.layer_norm_epsilon, vb.pp("ln_1"))?,
            c_attn: Conv1D::load(h, 3 * h, vb.pp("attn").pp("c_attn"))?,
            c_proj: Conv1D::load(h, h, vb.pp("attn").pp("c_proj"))?,
            ln_2: layers::layer_norm(h, cfg.layer_norm_epsilon, vb.pp("ln_2"))?,
            c_fc: Conv1D::load(h, inner, vb.pp("mlp").pp("c_fc"))?,
            mlp_proj: Conv1D::load(inner, h, vb.pp("mlp").pp("c_proj"))?,
            heads: cfg.n_head,
            act,
        })
    }

    fn forward(&self, x: &Tensor, mask_bias: &Tensor, causal: &Tensor) -> Result<Tensor> {
        let h = x.dim(D::Minus1)?;
        let qkv = self.c_attn.forward(&self.ln_1.forward(x)?)?;
        let (q, k, v) = (
            qkv.narrow(2, 0, h)?,
            qkv.narrow(2, h, h)?,
            qkv.narrow(2, 2 * h, h)?,
        );
        let ctx = layers::attention(&q, &k, &v, self.heads, mask_bias, Some(causal))?;
        let x = (x + self.c_proj.forward(&ctx)?)?;
        let inner = self
            .act
            .forward(&self.c_fc.forward(&self.ln_2.forward(&x)?)?)?;
        x + self.mlp_proj.forward(&inner)?
    }
}

/// `GPT2LMHeadModel`.
pub struct Gpt2 {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// `(vocab, n_embd)`: `lm_head.weight` when stored, else the tied input embeddings.
    lm_head: Tensor,
}

impl Gpt2 {
    pub fn load(vb: VarBuilder, cfg: &Gpt2Config) -> Result<Self> {
        let act = Activation::parse(&cfg.activation_function).map_err(candle_core::Error::msg)?;
        let base = if vb.contains_tensor("transformer.wte.weight") {
            vb.pp("transformer")
        } else {
            vb.clone()
        };
        let wte = candle_nn::embedding(cfg.vocab_size, cfg.n_embd, base.pp("wte"))?;
        let lm_head = if vb.contains_tensor("lm_head.weight") {
            vb.get((cfg.vocab_size, cfg.n_embd), "lm_head.weight")?
        } else {
            wte.embeddings().clone()
        };
        Ok(Gpt2 {
            wpe: candle_nn::embedding(cfg.n_positions, cfg.n_embd, base.pp("wpe"))?,
            blocks: (0..cfg.n_layer)
                .map(|i| Block::load(base.pp("h").pp(i), cfg, act))
                .collect::<Result<Vec<_>>>()?,
            ln_f: layers::layer_norm(cfg.n_embd, cfg.layer_norm_epsilon, base.pp("ln_f"))?,
            wte,
            lm_head,
        })
    }

    /// Logits `(batch, seq, vocab)` of every position. `mask` is 1 for real tokens (padding on
    /// the right); positions count from 0 as in the reference.
    pub fn forward(&self, input_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let device = input_ids.device();
        let positions = Tensor::arange(0u32, seq as u32, device)?;
        let mut x = self
            .wte
            .forward(input_ids)?
            .broadcast_add(&self.wpe.forward(&positions)?)?;
        let causal = layers::causal_bias(seq, device)?;
        let mask_bias = layers::additive_mask(mask)?;
        for block in &self.blocks {
            x = block.forward(&x, &mask_bias, &causal)?;
        }
        let x = self.ln_f.forward(&x)?;
        let (b, s, h) = x.dims3()?;
        x.reshape((b * s, h))?
            .matmul(&self.lm_head.t()?)?
            .reshape((b, s, ()))?
            .to_dtype(DType::F32)
    }
}
