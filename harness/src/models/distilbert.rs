//! DistilBERT, ported from transformers' `models/distilbert/modeling_distilbert.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/distilbert/modeling_distilbert.py>).
//!
//! Mask convention: transformers takes `attention_mask` with 1 = attend, 0 = padding, and so
//! does this port. candle-transformers' own DistilBERT expects the inverse (1 = masked); this
//! port does not use it, so one mask is passed to every architecture.

use std::collections::BTreeMap;

use super::linear::Lin;
use candle_core::{Module, Result, Tensor};
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

/// `config.json` of a DistilBERT checkpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct DistilBertConfig {
    pub vocab_size: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub hidden_dim: usize,
    #[serde(default = "default_act")]
    pub activation: String,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub num_labels: Option<usize>,
}

/// DistilBERT's LayerNorm epsilon is fixed in the reference code, not configurable.
const EPS: f64 = 1e-12;

struct TransformerBlock {
    /// `q_lin`, `k_lin`, `v_lin` fused at load.
    qkv: Lin,
    out_lin: Lin,
    sa_layer_norm: LayerNorm,
    lin1: Lin,
    lin2: Lin,
    output_layer_norm: LayerNorm,
    heads: usize,
    act: Activation,
}

impl TransformerBlock {
    fn load(vb: VarBuilder, cfg: &DistilBertConfig, act: Activation) -> Result<Self> {
        let d = cfg.dim;
        let att = vb.pp("attention");
        Ok(Self {
            qkv: linear::fused_linear(d, d, &[att.pp("q_lin"), att.pp("k_lin"), att.pp("v_lin")])?,
            out_lin: linear::linear(d, d, att.pp("out_lin"))?,
            sa_layer_norm: nn::layer_norm(d, EPS, vb.pp("sa_layer_norm"))?,
            lin1: linear::linear(d, cfg.hidden_dim, vb.pp("ffn").pp("lin1"))?,
            lin2: linear::linear(cfg.hidden_dim, d, vb.pp("ffn").pp("lin2"))?,
            output_layer_norm: nn::layer_norm(d, EPS, vb.pp("output_layer_norm"))?,
            heads: cfg.n_heads,
            act,
        })
    }

    fn forward(&self, x: &Tensor, mask_bias: &Tensor) -> Result<Tensor> {
        let ctx = nn::self_attention(&self.qkv.forward(x)?, self.heads, mask_bias)?;
        let x = self
            .sa_layer_norm
            .forward_residual(&self.out_lin.forward(&ctx)?, x)?;
        let inner = linear::dense_act(&self.lin1, self.act, &x)?;
        self.output_layer_norm
            .forward_residual(&self.lin2.forward(&inner)?, &x)
    }
}

/// DistilBERT encoder with its optional `DistilBertForSequenceClassification` head.
pub struct DistilBert {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<TransformerBlock>,
    /// `pre_classifier` (dim x dim, ReLU) then `classifier`.
    head: Option<(Lin, Lin)>,
}

impl DistilBert {
    pub fn load(vb: VarBuilder, cfg: &DistilBertConfig, num_labels: usize) -> Result<Self> {
        let act = Activation::parse(&cfg.activation).map_err(candle_core::Error::msg)?;
        let base = if vb.contains_tensor("distilbert.embeddings.word_embeddings.weight") {
            vb.pp("distilbert")
        } else {
            vb.clone()
        };
        let emb = base.pp("embeddings");
        let layers = (0..cfg.n_layers)
            .map(|i| TransformerBlock::load(base.pp("transformer").pp("layer").pp(i), cfg, act))
            .collect::<Result<Vec<_>>>()?;
        let head = if vb.contains_tensor("classifier.weight") {
            Some((
                linear::linear(cfg.dim, cfg.dim, vb.pp("pre_classifier"))?,
                linear::linear(cfg.dim, num_labels, vb.pp("classifier"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            word_embeddings: candle_nn::embedding(
                cfg.vocab_size,
                cfg.dim,
                emb.pp("word_embeddings"),
            )?,
            position_embeddings: candle_nn::embedding(
                cfg.max_position_embeddings,
                cfg.dim,
                emb.pp("position_embeddings"),
            )?,
            embeddings_norm: nn::layer_norm(cfg.dim, EPS, emb.pp("LayerNorm"))?,
            layers,
            head,
        })
    }
}

impl EncoderNet for DistilBert {
    fn encode(
        &self,
        input_ids: &Tensor,
        _token_type_ids: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, seq as u32, input_ids.device())?;
        let x = self
            .word_embeddings
            .forward(input_ids)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?;
        let mut x = self.embeddings_norm.forward(&x)?;
        let mask_bias = nn::additive_mask(mask)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask_bias)?;
        }
        Ok(x)
    }

    fn has_head(&self) -> bool {
        self.head.is_some()
    }

    fn linears_mut(&mut self) -> Vec<&mut Lin> {
        let mut out: Vec<&mut Lin> = Vec::new();
        for l in &mut self.layers {
            out.extend([&mut l.qkv, &mut l.out_lin, &mut l.lin1, &mut l.lin2]);
        }
        if let Some((a, b)) = &mut self.head {
            out.extend([a, b]);
        }
        out
    }

    fn classify(&self, hidden: &Tensor) -> Result<Tensor> {
        let Some((pre, classifier)) = &self.head else {
            candle_core::bail!("this checkpoint has no classification head");
        };
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        classifier.forward(&pre.forward(&first)?.relu()?)
    }
}

/// This port's row in [`ENCODERS`](super::encoder::ENCODERS).
pub const ARCH: EncoderArch = EncoderArch {
    model_type: "distilbert",
    build,
};

fn build(raw: &serde_json::Value, vb: VarBuilder) -> std::result::Result<Built, BuildError> {
    let cfg: DistilBertConfig = serde_json::from_value(raw.clone())?;
    let labels = head_label_names(&cfg.id2label, cfg.num_labels);
    Ok(Built {
        net: Box::new(DistilBert::load(vb, &cfg, labels.len())?),
        vocab_size: cfg.vocab_size,
        max_positions: cfg.max_position_embeddings,
        labels,
        default_pad: 0,
        dims: EncoderDims {
            layers: cfg.n_layers,
            hidden: cfg.dim,
            intermediate: cfg.hidden_dim,
        },
    })
}
