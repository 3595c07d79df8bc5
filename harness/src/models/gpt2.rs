//! GPT-2 (absent from candle-transformers; DistilGPT-2 shares the architecture), ported from
//! transformers' `models/gpt2/modeling_gpt2.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py>).
//!
//! `forward` returns the logits of every position, which perplexity needs (candle-transformers'
//! causal LMs return only the last position). GPT-2's `Conv1D` stores weights as `(in, out)`;
//! they are transposed once at load into the `(out, in)` layout every other linear layer here
//! uses, so one quantization path serves all ports.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use serde::Deserialize;

use super::decoder::{BuiltDecoder, DecoderArch, DecoderNet};
use super::encoder::BuildError;
use super::linear::Lin;
use super::nn::{self, Activation, KvCache, LayerNorm};
use crate::kernels::decoder_ops::{residual_add, CausalAttention};

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

/// GPT-2's `Conv1D` (`x @ weight + bias`, `weight` of shape `(in, out)`) as a [`Lin`].
fn conv1d(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Lin> {
    let weight = vb.get_with_hints(
        (in_dim, out_dim),
        "weight",
        candle_nn::init::DEFAULT_KAIMING_NORMAL,
    )?;
    let bias = vb.get_with_hints(out_dim, "bias", candle_nn::Init::Const(0.0))?;
    Ok(Lin::new(weight.t()?.contiguous()?, Some(bias)))
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Lin,
    c_proj: Lin,
    ln_2: LayerNorm,
    c_fc: Lin,
    mlp_proj: Lin,
    heads: usize,
    act: Activation,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &Gpt2Config, act: Activation) -> Result<Self> {
        let (h, inner) = (cfg.n_embd, cfg.n_inner.unwrap_or(4 * cfg.n_embd));
        Ok(Block {
            ln_1: nn::layer_norm(h, cfg.layer_norm_epsilon, vb.pp("ln_1"))?,
            c_attn: conv1d(h, 3 * h, vb.pp("attn").pp("c_attn"))?,
            c_proj: conv1d(h, h, vb.pp("attn").pp("c_proj"))?,
            ln_2: nn::layer_norm(h, cfg.layer_norm_epsilon, vb.pp("ln_2"))?,
            c_fc: conv1d(h, inner, vb.pp("mlp").pp("c_fc"))?,
            mlp_proj: conv1d(inner, h, vb.pp("mlp").pp("c_proj"))?,
            heads: cfg.n_head,
            act,
        })
    }

    /// `bias` is the additive causal (and padding) mask over all keys, cached ones included;
    /// `key_valid` (`batch * keys`, false for padding) the same padding for the fused path.
    fn forward(
        &self,
        x: &Tensor,
        bias: &Tensor,
        key_valid: Option<&[bool]>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return self.forward_fused(x, key_valid, cache);
        }
        let (b, s, h) = x.dims3()?;
        let d = h / self.heads;
        let qkv = self.c_attn.forward(&self.ln_1.forward(x)?)?;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i * h, h)?
                .reshape((b, s, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let (k, v) = match cache {
            Some((c, i)) => c.extend(i, k, v)?,
            None => (k, v),
        };
        let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
        self.finish(x, &ctx)
    }

    /// [`Block::forward`] on the CPU in f32 through the decoder's fused attention: queries,
    /// keys and values stay `(batch, seq, n_embd)` (no per-head transposes; the cache keeps
    /// that layout), masked keys are skipped instead of exponentiated (libm's slow underflow
    /// path took ~10% of a GPT-2 perplexity run), and the softmax is candle's own sum and
    /// division, so the results are the unfused path's bits.
    fn forward_fused(
        &self,
        x: &Tensor,
        key_valid: Option<&[bool]>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let (_, _, h) = x.dims3()?;
        let d = h / self.heads;
        let qkv = self.c_attn.forward(&self.ln_1.forward(x)?)?;
        let part = |i: usize| qkv.narrow(2, i * h, h)?.contiguous();
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let (k, v) = match cache {
            Some((c, i)) => c.extend_on(i, k, v, 1)?,
            None => (k, v),
        };
        let ctx = q.apply_op3_no_bwd(
            &k,
            &v,
            &CausalAttention {
                heads: self.heads,
                kv_heads: self.heads,
                head_dim: d,
                // The unfused path divides the scores by sqrt(d); for GPT-2's heads of 64
                // that is a power of two, so the product is the same bits.
                scale: (1.0 / (d as f64).sqrt()) as f32,
                softcap: None,
                window: None,
                key_valid,
                candle_softmax: true,
            },
        )?;
        self.finish(x, &ctx)
    }

    /// The output projection, the residual, and the MLP.
    fn finish(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let x = residual_add(x, &self.c_proj.forward(ctx)?)?;
        let inner = self
            .act
            .forward(&self.c_fc.forward(&self.ln_2.forward(&x)?)?)?;
        residual_add(&x, &self.mlp_proj.forward(&inner)?)
    }
}

/// `GPT2LMHeadModel`.
pub struct Gpt2 {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// `(vocab, n_embd)`: `lm_head.weight` when stored, else the tied input embeddings.
    lm_head: Lin,
    n_positions: usize,
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
        // A tied output projection stays in candle's layout, sharing the embedding table
        // instead of packing a second copy of the largest matrix.
        let lm_head = if vb.contains_tensor("lm_head.weight") {
            Lin::new(
                vb.get((cfg.vocab_size, cfg.n_embd), "lm_head.weight")?,
                None,
            )
        } else {
            Lin::tied(wte.embeddings().clone(), None)
        };
        Ok(Gpt2 {
            wpe: candle_nn::embedding(cfg.n_positions, cfg.n_embd, base.pp("wpe"))?,
            blocks: (0..cfg.n_layer)
                .map(|i| Block::load(base.pp("h").pp(i), cfg, act))
                .collect::<Result<Vec<_>>>()?,
            ln_f: nn::layer_norm(cfg.n_embd, cfg.layer_norm_epsilon, base.pp("ln_f"))?,
            wte,
            lm_head,
            n_positions: cfg.n_positions,
        })
    }

    /// Logits `(batch, seq, vocab)` of every position. `mask` is 1 for real tokens (padding on
    /// the right); positions count from 0 as in the reference.
    pub fn forward(&self, input_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let device = input_ids.device();
        let mut x = self.embed(input_ids, 0)?;
        let bias = nn::causal_bias(seq, 0, device)?.broadcast_add(&nn::additive_mask(mask)?)?;
        let valid = nn::key_valid(mask)?;
        for block in &self.blocks {
            x = block.forward(&x, &bias, Some(&valid), None)?;
        }
        self.head(&x)
    }

    /// Logits `(1, seq, vocab)` of `input_ids` `(1, seq)` placed after the positions already
    /// in `cache`, which is extended with them (one sequence, no padding).
    pub fn forward_cached(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.cached(input_ids, cache, false)
    }

    /// [`Gpt2::forward_cached`] with the output head on the last position only.
    pub fn forward_cached_last(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.cached(input_ids, cache, true)
    }

    fn cached(&self, input_ids: &Tensor, cache: &mut KvCache, last_only: bool) -> Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let past = cache.len;
        if past + seq > self.n_positions {
            candle_core::bail!(
                "sequence of {} tokens exceeds GPT-2's {} positions",
                past + seq,
                self.n_positions
            );
        }
        let mut x = self.embed(input_ids, past)?;
        let bias = nn::causal_bias(seq, past, input_ids.device())?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, &bias, None, Some((&mut *cache, i)))?;
        }
        cache.len += seq;
        if last_only {
            return self.head(&x.narrow(1, seq - 1, 1)?);
        }
        self.head(&x)
    }

    /// Longest sequence the position embeddings allow.
    pub fn max_positions(&self) -> usize {
        self.n_positions
    }

    /// Every linear layer, for `--student-quantize`.
    pub fn linears_mut(&mut self) -> Vec<&mut Lin> {
        let mut out: Vec<&mut Lin> = Vec::new();
        for b in &mut self.blocks {
            out.extend([&mut b.c_attn, &mut b.c_proj, &mut b.c_fc, &mut b.mlp_proj]);
        }
        out.push(&mut self.lm_head);
        out
    }

    fn embed(&self, input_ids: &Tensor, past: usize) -> Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let positions = Tensor::arange(past as u32, (past + seq) as u32, input_ids.device())?;
        self.wte
            .forward(input_ids)?
            .broadcast_add(&self.wpe.forward(&positions)?)
    }

    fn head(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.ln_f.forward(x)?;
        let (b, s, h) = x.dims3()?;
        self.lm_head
            .forward(&x.reshape((b * s, h))?)?
            .reshape((b, s, ()))?
            .to_dtype(DType::F32)
    }
}

/// This port's row in [`DECODERS`](super::decoder::DECODERS).
pub const ARCH: DecoderArch = DecoderArch {
    model_type: "gpt2",
    build,
    max_positions: |raw| {
        raw.get("n_positions")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
    },
};

fn build(raw: &serde_json::Value, vb: VarBuilder) -> std::result::Result<BuiltDecoder, BuildError> {
    let cfg: Gpt2Config = serde_json::from_value(raw.clone())?;
    Ok(BuiltDecoder {
        net: Box::new(Gpt2::load(vb, &cfg)?),
        max_positions: Some(cfg.n_positions),
        vocab_size: cfg.vocab_size,
        hidden: cfg.n_embd,
    })
}

impl DecoderNet for Gpt2 {
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        Gpt2::forward(self, ids, mask)
    }
    fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        Gpt2::forward_cached(self, ids, cache)
    }
    fn forward_cached_last(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        Gpt2::forward_cached_last(self, ids, cache)
    }
    fn linears_mut(&mut self) -> Vec<&mut Lin> {
        Gpt2::linears_mut(self)
    }
}
