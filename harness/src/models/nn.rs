//! Building blocks shared by the architecture ports: activations, layer norms that accept both
//! the current (`weight`/`bias`) and the original TF-converted (`gamma`/`beta`) tensor names,
//! additive attention masks, the KV cache, multi-head attention and pooling.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::kernels::attention::FusedAttention;
use crate::kernels::norm::AddLayerNorm;
use crate::kernels::ops::FastGeluErf;

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
            Activation::GeluErf if x.device().is_cpu() && x.dtype() == DType::F32 => {
                x.contiguous()?.apply_op1_no_bwd(&FastGeluErf)
            }
            Activation::GeluErf => x.gelu_erf(),
            // candle's gelu, the same bits, eight at a time and over the pool.
            Activation::GeluTanh if x.device().is_cpu() && x.dtype() == DType::F32 => x
                .contiguous()?
                .apply_op1_no_bwd(&crate::kernels::tanhf::GeluTanh),
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
    LayerNorm::new(weight, bias, eps)
}

/// candle's LayerNorm, run on the CPU by [`AddLayerNorm`] (the same arithmetic in one pass on
/// the kernels' pool), which also takes the residual a post-norm layer adds just before it.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    candle: candle_nn::LayerNorm,
    /// The scale and shift as f32 values when the weights live on the CPU in f32.
    cpu: Option<(Vec<f32>, Vec<f32>)>,
    eps: f32,
}

impl LayerNorm {
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Result<Self> {
        let cpu = if weight.device().is_cpu() && weight.dtype() == DType::F32 {
            Some((
                weight.flatten_all()?.to_vec1::<f32>()?,
                bias.flatten_all()?.to_vec1::<f32>()?,
            ))
        } else {
            None
        };
        Ok(Self {
            candle: candle_nn::LayerNorm::new(weight, bias, eps),
            cpu,
            eps: eps as f32,
        })
    }

    /// `LayerNorm(x + residual)`.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        match self.fused(x) {
            Some(op) => x
                .contiguous()?
                .apply_op2_no_bwd(&residual.contiguous()?, &op),
            None => self.candle.forward(&(x + residual)?),
        }
    }

    /// The fused op, where it applies to `x`.
    fn fused(&self, x: &Tensor) -> Option<AddLayerNorm<'_>> {
        let (weight, bias) = self.cpu.as_ref()?;
        (x.device().is_cpu() && x.dtype() == DType::F32).then_some(AddLayerNorm {
            weight,
            bias,
            eps: self.eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.fused(x) {
            Some(op) => x.contiguous()?.apply_op1_no_bwd(&op),
            None => self.candle.forward(x),
        }
    }
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

/// The attention mask `(batch, seq)` (1 for real tokens) as one flag per key, `batch * seq`
/// long: the fused attention's `key_valid`.
pub fn key_valid(mask: &Tensor) -> Result<Vec<bool>> {
    Ok(mask
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|m| m > 0.5)
        .collect())
}

/// Additive causal mask `(1, 1, seq, past + seq)` for `seq` new queries after `past` cached
/// positions: 0 where a query may see a key (key position <= query position), the dtype's
/// minimum elsewhere.
pub fn causal_bias(seq: usize, past: usize, device: &candle_core::Device) -> Result<Tensor> {
    windowed_causal_bias(seq, past, None, device)
}

/// [`causal_bias`] with a sliding window of `window` keys (transformers'
/// `sliding_window_overlay`: a query at position p sees keys p - window < k <= p).
pub fn sliding_causal_bias(
    seq: usize,
    past: usize,
    window: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    windowed_causal_bias(seq, past, Some(window), device)
}

fn windowed_causal_bias(
    seq: usize,
    past: usize,
    window: Option<usize>,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let keys = past + seq;
    let bias: Vec<f32> = (0..seq)
        .flat_map(|q| {
            let p = past + q;
            (0..keys).map(move |k| {
                let outside = window.is_some_and(|w| k + w <= p);
                if k > p || outside {
                    f32::MIN
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(bias, (1, 1, seq, keys), device)
}

/// Keys and values of the positions seen so far, per layer, so that generation runs each new
/// token alone instead of re-running the whole sequence.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Positions already in the cache.
    pub len: usize,
}

impl KvCache {
    /// The same cache for a batch of `n` sequences that all continue it (each layer's keys
    /// and values repeated along the batch axis), so several continuations of one shared
    /// context run as one batch.
    pub fn repeat_batch(&self, n: usize) -> Result<KvCache> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some((k, v)) => {
                    let mut times = vec![1; k.rank()];
                    times[0] = n;
                    Ok(Some((k.repeat(times.clone())?, v.repeat(times)?)))
                }
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            layers,
            len: self.len,
        })
    }

    /// Append this step's `(batch, heads, seq, head_dim)` keys and values for layer `i`;
    /// return everything cached for it.
    pub fn extend(&mut self, i: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        self.extend_on(i, k, v, 2)
    }

    /// [`KvCache::extend`] for keys and values laid out with positions along `dim` (the
    /// fused decoder ops keep `(batch, seq, kv_heads * head_dim)`, positions on 1).
    pub fn extend_on(
        &mut self,
        i: usize,
        k: Tensor,
        v: Tensor,
        dim: usize,
    ) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= i {
            self.layers.resize(i + 1, None);
        }
        let kv = match self.layers[i].take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], dim)?, Tensor::cat(&[&pv, &v], dim)?),
            None => (k, v),
        };
        self.layers[i] = Some(kv.clone());
        Ok(kv)
    }
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
    let heads_first =
        |t: &Tensor| -> Result<Tensor> { t.reshape((b, s, heads, head_dim))?.transpose(1, 2) };
    // The scale is applied while the query heads are copied into place (the copy was needed
    // anyway): one pass fewer over the scores than scaling them afterwards.
    let scale = 1.0 / (head_dim as f64).sqrt();
    let q = (heads_first(q)? * scale)?;
    let (k, v) = (heads_first(k)?.contiguous()?, heads_first(v)?.contiguous()?);
    let mut scores = q.matmul(&k.t()?)?;
    if let Some(pb) = position_bias {
        scores = scores.broadcast_add(pb)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(mask_bias)?)?;
    probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, hidden))
}

/// Self-attention from a fused `(batch, seq, 3 * hidden)` query/key/value projection and the
/// padding bias `(batch, 1, 1, seq)`; the context `(batch, seq, hidden)`. On the CPU in f32
/// this is one kernel ([`FusedAttention`]); elsewhere the generic [`attention`].
pub fn self_attention(qkv: &Tensor, heads: usize, mask_bias: &Tensor) -> Result<Tensor> {
    let (b, s, _) = qkv.dims3()?;
    if qkv.device().is_cpu() && qkv.dtype() == DType::F32 && mask_bias.dims() == [b, 1, 1, s] {
        return qkv
            .contiguous()?
            .apply_op2_no_bwd(&mask_bias.contiguous()?, &FusedAttention { heads });
    }
    let (q, k, v) = split3(qkv)?;
    attention(&q, &k, &v, heads, mask_bias, None)
}

/// Mean of `hidden` (batch, seq, h) over positions where `mask` (batch, seq) is 1.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if hidden.device().is_cpu() && hidden.dtype() == DType::F32 && hidden.rank() == 3 {
        let mask = mask.to_dtype(DType::F32)?.contiguous()?;
        return hidden
            .contiguous()?
            .apply_op2_no_bwd(&mask, &crate::kernels::ops::MaskedMean);
    }
    mean_pool_by_tensor_ops(hidden, mask)
}

/// [`mean_pool`] in candle's tensor ops (other devices and dtypes; the reference of the CPU
/// kernel's test).
fn mean_pool_by_tensor_ops(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    let counts = m.sum(1)?.clamp(1e-9, f64::INFINITY)?;
    summed.broadcast_div(&counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::linear::tests::matrix;
    use candle_core::Device;

    #[test]
    fn mean_pool_gives_candles_sums_bit_for_bit() {
        // Masks with trailing padding, a hole in the middle, all ones, and none at all (the
        // mean is then 0, divided by the 1e-9 floor); widths with and without a tail past 8.
        let dev = Device::Cpu;
        for (batch, seq, h) in [(4, 7, 384), (1, 1, 5), (3, 40, 33)] {
            let hidden = (matrix(batch * seq, h, 7) * 3.0)
                .unwrap()
                .reshape((batch, seq, h))
                .unwrap();
            let mask: Vec<u32> = (0..batch * seq)
                .map(|i| {
                    let (b, s) = (i / seq, i % seq);
                    match b % 4 {
                        0 => (s < seq.div_ceil(2)) as u32,
                        1 => (s != seq / 2) as u32,
                        2 => 1,
                        _ => 0,
                    }
                })
                .collect();
            let mask = Tensor::from_vec(mask, (batch, seq), &dev).unwrap();
            let bits = |t: Tensor| -> Vec<u32> {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.iter().map(|x| x.to_bits()).collect()
            };
            let got = mean_pool(&hidden, &mask).unwrap();
            assert_eq!(got.dims(), [batch, h]);
            let want = mean_pool_by_tensor_ops(&hidden, &mask).unwrap();
            assert_eq!(bits(got), bits(want), "{batch} x {seq} x {h}");
        }
        // A mask that does not match the hidden states is an error, not a panic.
        let hidden = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
        let mask = Tensor::ones((2, 4), DType::U32, &dev).unwrap();
        let err = mean_pool(&hidden, &mask).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn fast_gelu_matches_the_exact_erf_gelu() {
        let max_abs_diff = |x: &Tensor| {
            let got = Activation::GeluErf.forward(x).unwrap();
            (got - x.gelu_erf().unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let x = (matrix(300, 300, 9) * 8.0).unwrap();
        let diff = max_abs_diff(&x);
        assert!(diff < 2e-6, "{diff}");
        // A transposed (non-contiguous) input gives the transposed result.
        let diff = max_abs_diff(&x.t().unwrap());
        assert!(diff < 2e-6, "{diff}");
    }

    #[test]
    fn fused_attention_matches_the_generic_path() {
        for (b, s, heads, d) in [(1, 5, 2, 4), (3, 33, 12, 8)] {
            let h = heads * d;
            let qkv = matrix(b * s, 3 * h, 21).reshape((b, s, 3 * h)).unwrap();
            let mask: Vec<u32> = (0..b * s).map(|i| u32::from(i % s < s - i / s)).collect();
            let bias =
                additive_mask(&Tensor::from_vec(mask, (b, s), &Device::Cpu).unwrap()).unwrap();
            let (q, k, v) = split3(&qkv).unwrap();
            let want = attention(&q, &k, &v, heads, &bias, None).unwrap();
            let got = self_attention(&qkv, heads, &bias).unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "{b}x{s}x{heads}: {diff}");
        }
    }

    /// The `(1, 1, seq, keys)` bias as rows.
    fn bias_rows(b: &Tensor) -> Vec<Vec<f32>> {
        b.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn a_sliding_window_sees_the_last_window_keys_only() {
        // Two new queries after 3 cached positions, window 2: position 3 sees 2..=3, 4 sees 3..=4.
        let rows = bias_rows(&sliding_causal_bias(2, 3, 2, &Device::Cpu).unwrap());
        let m = f32::MIN;
        assert_eq!(rows[0], vec![m, m, 0.0, 0.0, m]);
        assert_eq!(rows[1], vec![m, m, m, 0.0, 0.0]);
    }

    #[test]
    fn causal_bias_after_cached_positions_sees_the_past() {
        let rows = bias_rows(&causal_bias(2, 3, &Device::Cpu).unwrap());
        assert_eq!(rows[0][..4], [0.0; 4]);
        assert_eq!(rows[0][4], f32::MIN);
        assert_eq!(rows[1], vec![0.0; 5]);
    }
}
