//! BERT, ported from transformers' `models/bert/modeling_bert.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py>),
//! in candle-transformers' style: a serde config mirroring `config.json`, and each layer's
//! `load(vb.pp("name"))` following the checkpoint's tensor names.
//!
//! Loads `BertModel` checkpoints (sentence encoders: tensors at the root) and
//! `BertForSequenceClassification` ones (encoder under `bert.`, `classifier` at the root).

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
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_pos_type() -> String {
    "absolute".into()
}

/// `config.json` of a BERT checkpoint (the fields the forward pass needs).
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub num_labels: Option<usize>,
}

struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
}

impl BertEmbeddings {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        Ok(Self {
            word_embeddings: candle_nn::embedding(
                cfg.vocab_size,
                cfg.hidden_size,
                vb.pp("word_embeddings"),
            )?,
            position_embeddings: candle_nn::embedding(
                cfg.max_position_embeddings,
                cfg.hidden_size,
                vb.pp("position_embeddings"),
            )?,
            token_type_embeddings: candle_nn::embedding(
                cfg.type_vocab_size,
                cfg.hidden_size,
                vb.pp("token_type_embeddings"),
            )?,
            layer_norm: nn::layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor) -> Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, seq as u32, input_ids.device())?;
        let x = self
            .word_embeddings
            .forward(input_ids)?
            .add(&self.token_type_embeddings.forward(token_type_ids)?)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?;
        self.layer_norm.forward(&x)
    }
}

struct BertLayer {
    /// Query, key and value projections fused into one `(3h, h)` matrix at load: one matmul
    /// per layer instead of three.
    qkv: Lin,
    attention_output: Lin,
    attention_norm: LayerNorm,
    intermediate: Lin,
    output: Lin,
    output_norm: LayerNorm,
    heads: usize,
    act: Activation,
}

impl BertLayer {
    fn load(vb: VarBuilder, cfg: &BertConfig, act: Activation) -> Result<Self> {
        let h = cfg.hidden_size;
        let att = vb.pp("attention");
        Ok(Self {
            qkv: linear::fused_linear(
                h,
                h,
                &[
                    att.pp("self").pp("query"),
                    att.pp("self").pp("key"),
                    att.pp("self").pp("value"),
                ],
            )?,
            attention_output: linear::linear(h, h, att.pp("output").pp("dense"))?,
            attention_norm: nn::layer_norm(
                h,
                cfg.layer_norm_eps,
                att.pp("output").pp("LayerNorm"),
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

    fn forward(&self, x: &Tensor, mask_bias: &Tensor) -> Result<Tensor> {
        let ctx = nn::self_attention(&self.qkv.forward(x)?, self.heads, mask_bias)?;
        let x = self
            .attention_norm
            .forward_residual(&self.attention_output.forward(&ctx)?, x)?;
        let inner = linear::dense_act(&self.intermediate, self.act, &x)?;
        self.output_norm
            .forward_residual(&self.output.forward(&inner)?, &x)
    }
}

/// BERT encoder with its optional pooler and sequence-classification head.
pub struct Bert {
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    pooler: Option<Lin>,
    classifier: Option<Lin>,
}

impl Bert {
    /// Load from a checkpoint; `num_labels` sizes the classifier when the checkpoint has one.
    pub fn load(vb: VarBuilder, cfg: &BertConfig, num_labels: usize) -> Result<Self> {
        if cfg.position_embedding_type != "absolute" {
            candle_core::bail!(
                "position_embedding_type '{}' is not supported (only 'absolute')",
                cfg.position_embedding_type
            );
        }
        let act = Activation::parse(&cfg.hidden_act).map_err(candle_core::Error::msg)?;
        let base = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb.clone()
        };
        let embeddings = BertEmbeddings::load(base.pp("embeddings"), cfg)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::load(base.pp("encoder").pp("layer").pp(i), cfg, act))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if base.contains_tensor("pooler.dense.weight") {
            Some(linear::linear(
                cfg.hidden_size,
                cfg.hidden_size,
                base.pp("pooler").pp("dense"),
            )?)
        } else {
            None
        };
        let classifier = if vb.contains_tensor("classifier.weight") {
            if pooler.is_none() {
                candle_core::bail!("the checkpoint has a classifier but no pooler weights");
            }
            Some(linear::linear(
                cfg.hidden_size,
                num_labels,
                vb.pp("classifier"),
            )?)
        } else {
            None
        };
        Ok(Self {
            embeddings,
            layers,
            pooler,
            classifier,
        })
    }
}

impl EncoderNet for Bert {
    fn encode(&self, input_ids: &Tensor, token_type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mask_bias = nn::additive_mask(mask)?;
        let mut x = self.embeddings.forward(input_ids, token_type_ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask_bias)?;
        }
        Ok(x)
    }

    fn has_head(&self) -> bool {
        self.classifier.is_some()
    }

    fn linears_mut(&mut self) -> Vec<&mut Lin> {
        let mut out: Vec<&mut Lin> = Vec::new();
        for l in &mut self.layers {
            out.extend([
                &mut l.qkv,
                &mut l.attention_output,
                &mut l.intermediate,
                &mut l.output,
            ]);
        }
        out.extend(self.pooler.as_mut());
        out.extend(self.classifier.as_mut());
        out
    }

    fn classify(&self, hidden: &Tensor) -> Result<Tensor> {
        let (Some(pooler), Some(classifier)) = (&self.pooler, &self.classifier) else {
            candle_core::bail!("this checkpoint has no classification head");
        };
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = pooler.forward(&first)?.tanh()?;
        classifier.forward(&pooled)
    }
}

/// This port's row in [`ENCODERS`](super::encoder::ENCODERS).
pub const ARCH: EncoderArch = EncoderArch {
    model_type: "bert",
    build,
};

fn build(raw: &serde_json::Value, vb: VarBuilder) -> std::result::Result<Built, BuildError> {
    let cfg: BertConfig = serde_json::from_value(raw.clone())?;
    let labels = head_label_names(&cfg.id2label, cfg.num_labels);
    Ok(Built {
        net: Box::new(Bert::load(vb, &cfg, labels.len())?),
        vocab_size: cfg.vocab_size,
        max_positions: cfg.max_position_embeddings,
        labels,
        default_pad: 0,
        dims: EncoderDims {
            layers: cfg.num_hidden_layers,
            hidden: cfg.hidden_size,
            intermediate: cfg.intermediate_size,
        },
    })
}
