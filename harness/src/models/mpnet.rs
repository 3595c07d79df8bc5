//! MPNet (absent from candle-transformers), ported from transformers'
//! `models/mpnet/modeling_mpnet.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/mpnet/modeling_mpnet.py>),
//! including the T5-style relative position bias shared by all layers.

use std::collections::BTreeMap;

use super::linear::Lin;
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use serde::Deserialize;

use super::checkpoint::head_label_names;
use super::encoder::{BuildError, Built, EncoderArch};
use super::linear;
use super::nn::{self, Activation, LayerNorm};
use super::EncoderNet;
use crate::profile::flops::EncoderDims;

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_pad() -> u32 {
    1
}
fn default_buckets() -> usize {
    32
}

/// `config.json` of an MPNet checkpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct MpnetConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_pad")]
    pub pad_token_id: u32,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub num_labels: Option<usize>,
}

/// `MPNetEncoder.relative_position_bucket`, with the reference's f32 arithmetic so bucket
/// boundaries match exactly: half the buckets for each direction, exact buckets for small
/// distances and logarithmic ones up to `max_distance`.
pub fn relative_position_bucket(
    relative_position: i64,
    num_buckets: usize,
    max_distance: i64,
) -> usize {
    let half = (num_buckets / 2) as i64;
    let n = -relative_position;
    let mut ret = if n < 0 { half } else { 0 };
    let n = n.abs();
    let max_exact = half / 2;
    if n < max_exact {
        ret += n;
    } else {
        let ratio = (n as f32 / max_exact as f32).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32);
        let large = max_exact + (ratio * (half - max_exact) as f32) as i64;
        ret += large.min(half - 1);
    }
    ret as usize
}

struct MpnetLayer {
    /// `attn.q`, `attn.k`, `attn.v` fused at load.
    qkv: Lin,
    o: Lin,
    attention_norm: LayerNorm,
    intermediate: Lin,
    output: Lin,
    output_norm: LayerNorm,
    heads: usize,
    act: Activation,
}

impl MpnetLayer {
    fn load(vb: VarBuilder, cfg: &MpnetConfig, act: Activation) -> Result<Self> {
        let h = cfg.hidden_size;
        let attn = vb.pp("attention").pp("attn");
        Ok(Self {
            qkv: linear::fused_linear(h, h, &[attn.pp("q"), attn.pp("k"), attn.pp("v")])?,
            o: linear::linear(h, h, attn.pp("o"))?,
            attention_norm: nn::layer_norm(
                h,
                cfg.layer_norm_eps,
                vb.pp("attention").pp("LayerNorm"),
            )?,
            intermediate: linear::linear(
                h,
                cfg.intermediate_size,
                vb.pp("intermediate").pp("dense"),
            )?,
            output: linear::linear(cfg.intermediate_size, h, vb.pp("output").pp("dense"))?,
            output_norm: nn::layer_norm(h, cfg.layer_norm_eps, vb.pp("output").pp("LayerNorm"))?,
            heads: cfg.num_attention_heads,
            act,
        })
    }

    fn forward(&self, x: &Tensor, mask_bias: &Tensor, position_bias: &Tensor) -> Result<Tensor> {
        let (q, k, v) = nn::split3(&self.qkv.forward(x)?)?;
        let ctx = nn::attention(&q, &k, &v, self.heads, mask_bias, Some(position_bias))?;
        let x = self
            .attention_norm
            .forward_residual(&self.o.forward(&ctx)?, x)?;
        let inner = linear::dense_act(&self.intermediate, self.act, &x)?;
        self.output_norm
            .forward_residual(&self.output.forward(&inner)?, &x)
    }
}

/// MPNet encoder with its optional `MPNetForSequenceClassification` head.
pub struct Mpnet {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<MpnetLayer>,
    relative_attention_bias: Embedding,
    num_buckets: usize,
    pad_token_id: u32,
    /// `classifier.dense` (tanh) then `classifier.out_proj`, on the first token.
    head: Option<(Lin, Lin)>,
}

impl Mpnet {
    pub fn load(vb: VarBuilder, cfg: &MpnetConfig, num_labels: usize) -> Result<Self> {
        let act = Activation::parse(&cfg.hidden_act).map_err(candle_core::Error::msg)?;
        let base = if vb.contains_tensor("mpnet.embeddings.word_embeddings.weight") {
            vb.pp("mpnet")
        } else {
            vb.clone()
        };
        let emb = base.pp("embeddings");
        let h = cfg.hidden_size;
        let head = if vb.contains_tensor("classifier.out_proj.weight") {
            Some((
                linear::linear(h, h, vb.pp("classifier").pp("dense"))?,
                linear::linear(h, num_labels, vb.pp("classifier").pp("out_proj"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            word_embeddings: candle_nn::embedding(cfg.vocab_size, h, emb.pp("word_embeddings"))?,
            position_embeddings: candle_nn::embedding(
                cfg.max_position_embeddings,
                h,
                emb.pp("position_embeddings"),
            )?,
            embeddings_norm: nn::layer_norm(h, cfg.layer_norm_eps, emb.pp("LayerNorm"))?,
            layers: (0..cfg.num_hidden_layers)
                .map(|i| MpnetLayer::load(base.pp("encoder").pp("layer").pp(i), cfg, act))
                .collect::<Result<Vec<_>>>()?,
            relative_attention_bias: candle_nn::embedding(
                cfg.relative_attention_num_buckets,
                cfg.num_attention_heads,
                base.pp("encoder").pp("relative_attention_bias"),
            )?,
            num_buckets: cfg.relative_attention_num_buckets,
            pad_token_id: cfg.pad_token_id,
            head,
        })
    }

    /// `create_position_ids_from_input_ids`: positions count up from `pad + 1` over non-padding
    /// tokens; padding tokens get position `pad`.
    fn position_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let ids = input_ids.to_vec2::<u32>()?;
        let pad = self.pad_token_id;
        let pos: Vec<Vec<u32>> = ids
            .iter()
            .map(|row| {
                let mut count = 0;
                row.iter()
                    .map(|&t| {
                        if t == pad {
                            pad
                        } else {
                            count += 1;
                            count + pad
                        }
                    })
                    .collect()
            })
            .collect();
        Tensor::new(pos, input_ids.device())
    }

    /// Relative position bias (1, heads, seq, seq), from positions 0..seq as `MPNetEncoder` does.
    fn position_bias(&self, seq: usize, device: &Device) -> Result<Tensor> {
        let buckets: Vec<u32> = (0..seq as i64)
            .flat_map(|q| (0..seq as i64).map(move |k| (q, k)))
            .map(|(q, k)| relative_position_bucket(k - q, self.num_buckets, 128) as u32)
            .collect();
        let buckets = Tensor::from_vec(buckets, (seq, seq), device)?;
        self.relative_attention_bias
            .forward(&buckets)? // (seq, seq, heads)
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .contiguous()
    }
}

impl EncoderNet for Mpnet {
    fn encode(
        &self,
        input_ids: &Tensor,
        _token_type_ids: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let positions = self.position_ids(input_ids)?;
        let x = (self.word_embeddings.forward(input_ids)?
            + self.position_embeddings.forward(&positions)?)?;
        let mut x = self.embeddings_norm.forward(&x)?;
        let mask_bias = nn::additive_mask(mask)?;
        let position_bias = self.position_bias(seq, input_ids.device())?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask_bias, &position_bias)?;
        }
        Ok(x)
    }

    fn has_head(&self) -> bool {
        self.head.is_some()
    }

    fn linears_mut(&mut self) -> Vec<&mut Lin> {
        let mut out: Vec<&mut Lin> = Vec::new();
        for l in &mut self.layers {
            out.extend([&mut l.qkv, &mut l.o, &mut l.intermediate, &mut l.output]);
        }
        if let Some((a, b)) = &mut self.head {
            out.extend([a, b]);
        }
        out
    }

    fn classify(&self, hidden: &Tensor) -> Result<Tensor> {
        let Some((dense, out_proj)) = &self.head else {
            candle_core::bail!("this checkpoint has no classification head");
        };
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        out_proj.forward(&dense.forward(&first)?.tanh()?)
    }
}

/// This port's row in [`ENCODERS`](super::encoder::ENCODERS).
pub const ARCH: EncoderArch = EncoderArch {
    model_type: "mpnet",
    build,
};

fn build(raw: &serde_json::Value, vb: VarBuilder) -> std::result::Result<Built, BuildError> {
    let cfg: MpnetConfig = serde_json::from_value(raw.clone())?;
    let labels = head_label_names(&cfg.id2label, cfg.num_labels);
    Ok(Built {
        net: Box::new(Mpnet::load(vb, &cfg, labels.len())?),
        vocab_size: cfg.vocab_size,
        max_positions: // Positions start after the padding index, as in RoBERTa.
        cfg.max_position_embeddings
            .saturating_sub(cfg.pad_token_id as usize + 1),
        labels,
        default_pad: cfg.pad_token_id,
        dims: EncoderDims {
            layers: cfg.num_hidden_layers,
            hidden: cfg.hidden_size,
            intermediate: cfg.intermediate_size,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::relative_position_bucket;

    #[test]
    fn buckets_match_reference_values() {
        // Values from transformers' MPNetEncoder.relative_position_bucket(num_buckets=32,
        // max_distance=128), worked by hand: key after query (positive relative position)
        // counts as n < 0 and lands in the upper half.
        assert_eq!(relative_position_bucket(0, 32, 128), 0);
        assert_eq!(relative_position_bucket(-1, 32, 128), 1);
        assert_eq!(relative_position_bucket(-7, 32, 128), 7);
        assert_eq!(relative_position_bucket(1, 32, 128), 17);
        // n = 8: 8 + floor(log(8/8)/log(16) * 8) = 8
        assert_eq!(relative_position_bucket(-8, 32, 128), 8);
        // n = 20: 8 + floor(ln(2.5)/ln(16) * 8) = 8 + floor(2.644) = 10
        assert_eq!(relative_position_bucket(-20, 32, 128), 10);
        // Far away saturates at half - 1.
        assert_eq!(relative_position_bucket(-1000, 32, 128), 15);
        assert_eq!(relative_position_bucket(1000, 32, 128), 31);
    }
}
