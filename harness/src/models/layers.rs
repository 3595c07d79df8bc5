//! Building blocks shared by the encoder ports: activations, layer norms that accept both the
//! current (`weight`/`bias`) and the original TF-converted (`gamma`/`beta`) tensor names, the
//! additive attention mask, and multi-head attention.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};

/// Activation functions named by `hidden_act` / `activation` in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU with erf, what transformers calls `gelu`.
    GeluErf,
    /// Tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    GeluTanh,
    Relu,
    Silu,
}

impl Activation {
    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(format!("unsupported activation '{other}'")),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::GeluErf => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}

/// A LayerNorm under `vb`, reading `weight`/`bias` or the legacy `gamma`/`beta`.
pub fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    let (w, b) = if vb.contains_tensor("gamma") && !vb.contains_tensor("weight") {
        ("gamma", "beta")
    } else {
        ("weight", "bias")
    };
    // The hints only matter for random weights (a VarMap): identity scale, zero shift.
    let weight = vb.get_with_hints(size, w, candle_nn::Init::Const(1.0))?;
    let bias = vb.get_with_hints(size, b, candle_nn::Init::Const(0.0))?;
    Ok(LayerNorm::new(weight, bias, eps))
}

/// A linear layer with bias, as every encoder here uses.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear(in_dim, out_dim, vb)
}

/// Several `(out, in)` linear layers of one input fused into one, their outputs concatenated
/// in order: one matmul where there were several. Used for the query, key and value
/// projections. Measured on MiniLM-L6 (BENCHMARKS.md): about +8% sequences/s at 1 x 16 tokens
/// in three alternating A/B runs, no measurable change at 1 x 128.
pub fn fused_linear(in_dim: usize, out_dim: usize, parts: &[VarBuilder]) -> Result<Linear> {
    let mut weights = Vec::with_capacity(parts.len());
    let mut biases = Vec::with_capacity(parts.len());
    for vb in parts {
        let l = linear(in_dim, out_dim, vb.clone())?;
        weights.push(l.weight().clone());
        biases.push(
            l.bias()
                .cloned()
                .ok_or_else(|| candle_core::Error::msg("expected a bias"))?,
        );
    }
    Ok(Linear::new(
        Tensor::cat(&weights, 0)?,
        Some(Tensor::cat(&biases, 0)?),
    ))
}

/// Split a fused `(batch, seq, 3h)` projection into its three `(batch, seq, h)` parts.
pub fn split3(x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let h = x.dim(D::Minus1)? / 3;
    Ok((
        x.narrow(D::Minus1, 0, h)?,
        x.narrow(D::Minus1, h, h)?,
        x.narrow(D::Minus1, 2 * h, h)?,
    ))
}

/// Turn a (batch, seq) 0/1 attention mask into the additive bias (batch, 1, 1, seq) that
/// transformers uses: 0 where attended, the dtype's minimum where masked.
pub fn additive_mask(mask: &Tensor) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let mask = mask.to_dtype(DType::F32)?;
    let bias = ((mask.ones_like()? - &mask)? * f32::MIN as f64)?;
    bias.reshape((b, 1, 1, s))
}

/// Additive causal mask `(1, 1, seq, seq)`: 0 where a query may see a key (key <= query), the
/// dtype's minimum above the diagonal.
pub fn causal_bias(seq: usize, device: &candle_core::Device) -> Result<Tensor> {
    let bias: Vec<f32> = (0..seq)
        .flat_map(|q| (0..seq).map(move |k| if k > q { f32::MIN } else { 0.0 }))
        .collect();
    Tensor::from_vec(bias, (1, 1, seq, seq), device)
}

/// Scaled dot-product attention over already projected q, k, v of shape (batch, seq, hidden),
/// with optional additive biases of shape broadcastable to (batch, heads, seq, seq).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask_bias: &Tensor,
    position_bias: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, s, hidden) = q.dims3()?;
    let head_dim = hidden / heads;
    let split = |t: &Tensor| -> Result<Tensor> {
        t.reshape((b, s, heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (split(q)?, split(k)?, split(v)?);
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut scores = (q.matmul(&k.t()?)? * scale)?;
    if let Some(pb) = position_bias {
        scores = scores.broadcast_add(pb)?;
    }
    let scores = scores.broadcast_add(mask_bias)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, hidden))
}

/// Mean of `hidden` (batch, seq, h) over positions where `mask` (batch, seq) is 1.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    let counts = m.sum(1)?.clamp(1e-9, f64::INFINITY)?;
    summed.broadcast_div(&counts)
}

/// Apply a linear layer then an activation.
pub fn dense_act(layer: &Linear, act: Activation, x: &Tensor) -> Result<Tensor> {
    act.forward(&layer.forward(x)?)
}
