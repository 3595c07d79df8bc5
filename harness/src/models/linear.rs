//! The linear layer every port uses, `y = x Wᵀ + b`, with its weight formats and the policy
//! of which kernel multiplies them: f32 packed for the harness's GEMM, Q8_0 / Q4_0 / Q4_1 on the
//! integer GEMM, other block formats on candle's quantized kernels (or dequantized for many
//! rows); quantizing a loaded model (`--student-quantize`) in place; and the names of the
//! kernels each format runs on (`kernels::dispatch`).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::nn::Activation;
use crate::kernels::dispatch::{self, candle_quantized_kernel, Kernel};
use crate::kernels::ops::{run_packed, RoundToQ8_0};
use crate::kernels::qgemm::{BlockFormat, Int8Weight};
use crate::kernels::sgemm::Epilogue;
use crate::kernels::sgemm::{PackedGemm, PackedWeight};

/// A linear layer `y = x W^T + b` whose weight is f32 or quantized (GGUF blocks multiplied by
/// candle's quantized kernels, never dequantized). Every projection of every port is one, so
/// `--student-quantize` can turn any loaded model into a quantized student in place.
pub struct Lin {
    weight: Weight,
    bias: Option<Tensor>,
    /// Columns of zeros appended to the weight so that its inner dimension is a multiple of
    /// the quantization block (k-quants use 256-wide blocks; MiniLM's width is 384). The input
    /// gets the same zero columns at forward time, which leaves the product unchanged.
    pad: usize,
    /// Whether candle's quantized kernel takes this weight's width (its Q4_1, Q5_0 and Q5_1
    /// dot products need an even number of 32-wide blocks and panic otherwise); when not,
    /// every call takes the dequantized path.
    kernel_ok: bool,
}

/// How a [`Lin`] holds its weight.
enum Weight {
    /// As candle multiplies it: f32 on a GPU, on a CPU without AVX2/FMA or shared with an
    /// embedding table ([`Lin::tied`]); or quantized blocks.
    Candle(QMatMul),
    /// f32 packed once for [`sgemm`](crate::kernels::sgemm) (CPUs with AVX2 and FMA), with the bias as
    /// a plain slice for the kernel.
    Packed(PackedWeight, Option<Vec<f32>>),
    /// Q8_0, Q4_0 or Q4_1 blocks laid out once for the integer GEMM of [`qgemm`](crate::kernels::qgemm)
    /// (same CPUs), with the bias as a plain slice.
    Int8(Int8Weight, Option<Vec<f32>>),
}

/// Whether candle's CPU dot product for `dtype` accepts rows of `k` values.
fn kernel_accepts(dtype: GgmlDType, k: usize) -> bool {
    k.is_multiple_of(kernel_block(dtype))
}

/// The width a row must be a multiple of for `dtype`'s kernel.
fn kernel_block(dtype: GgmlDType) -> usize {
    match dtype {
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 => 2 * dtype.block_size(),
        _ => dtype.block_size(),
    }
}

impl Lin {
    /// From an f32 weight `(out, in)` and an optional bias `(out,)`. On a CPU with AVX2 and
    /// FMA the weight is packed for [`sgemm`](crate::kernels::sgemm) and the tensor dropped (the
    /// packed copy replaces it; memory stays the same).
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        let packed = Self::pack(&weight, bias.as_ref()).ok().flatten();
        Lin {
            kernel_ok: true,
            weight: match packed {
                Some((w, b)) => Weight::Packed(w, b),
                None => Weight::Candle(QMatMul::Tensor(weight)),
            },
            bias,
            pad: 0,
        }
    }

    /// From an f32 weight that another layer also reads (an output projection tied to the
    /// token embeddings): kept as candle's tensor, so the two share one copy.
    pub fn tied(weight: Tensor, bias: Option<Tensor>) -> Self {
        Lin {
            kernel_ok: true,
            weight: Weight::Candle(QMatMul::Tensor(weight)),
            bias,
            pad: 0,
        }
    }

    /// The packed weight and bias, when this machine runs the packed kernels for it.
    fn pack(
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Option<(PackedWeight, Option<Vec<f32>>)>> {
        if !weight.device().is_cpu() || weight.dtype() != DType::F32 || !PackedWeight::supported() {
            return Ok(None);
        }
        let (n, k) = weight.dims2()?;
        let Some(bias) = kernel_bias(bias, n)? else {
            return Ok(None);
        };
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        Ok(Some((PackedWeight::pack(&w, n, k), bias)))
    }

    /// From weights that are already quantized (a GGUF file), kept as they are.
    pub fn from_qtensor(weight: QTensor, bias: Option<Tensor>) -> Result<Self> {
        let (_, k) = weight.shape().dims2()?;
        let dtype = weight.dtype();
        if let Some(int8) = int8_from_blocks(&weight, bias.as_ref())? {
            return Ok(Lin {
                kernel_ok: true,
                weight: int8,
                bias,
                pad: 0,
            });
        }
        Ok(match QMatMul::from_qtensor(weight)? {
            // f32 tensors of a GGUF file come back dense: run them as any f32 layer.
            QMatMul::Tensor(t) if t.dtype() == DType::F32 => Lin::new(t, bias),
            weight => Lin {
                kernel_ok: kernel_accepts(dtype, k),
                weight: Weight::Candle(weight),
                bias,
                pad: 0,
            },
        })
    }

    /// Quantize the weight to `dtype` with candle's quantizer (round to nearest per block, as
    /// llama.cpp's reference quantizers). The bias stays f32. A weight that is already
    /// quantized is left alone.
    pub fn quantize(&mut self, dtype: GgmlDType) -> Result<()> {
        let Some(w) = self.dense_weight()? else {
            return Ok(());
        };
        let (_, in_dim) = w.dims2()?;
        let block = kernel_block(dtype);
        let pad = in_dim.next_multiple_of(block) - in_dim;
        let w = if pad > 0 {
            w.pad_with_zeros(1, 0, pad)?
        } else {
            w
        };
        let q = QTensor::quantize(&w, dtype)?;
        self.weight = match int8_from_blocks(&q, self.bias.as_ref())? {
            Some(int8) => int8,
            None => Weight::Candle(QMatMul::from_qtensor(q)?),
        };
        self.pad = pad;
        self.kernel_ok = true;
        Ok(())
    }

    /// Bytes the weight and bias take in memory (quantized blocks count at their real size).
    pub fn bytes(&self) -> usize {
        let w = match &self.weight {
            Weight::Candle(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            Weight::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => {
                t.elem_count() * t.dtype().size_in_bytes()
            }
            Weight::Packed(p, _) => p.n() * p.k() * 4,
            // f32 scales: 36 bytes per 32 Q8_0 values where the file's f16 scales make 34,
            // 20 per 32 Q4_0 values against 18.
            Weight::Int8(q, _) => q.weight_bytes(),
        };
        w + self.bias.as_ref().map_or(0, |b| b.elem_count() * 4)
    }

    /// Parameters of the layer as the checkpoint had them (padding excluded).
    pub fn parameters(&self) -> usize {
        let (out, padded_in) = match &self.weight {
            Weight::Candle(QMatMul::QTensor(q)) => q.shape().dims2().unwrap_or((0, 0)),
            Weight::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => {
                t.dims2().unwrap_or((0, 0))
            }
            Weight::Packed(p, _) => (p.n(), p.k()),
            Weight::Int8(q, _) => (q.n(), q.k()),
        };
        out * (padded_in - self.pad) + self.bias.as_ref().map_or(0, |b| b.elem_count())
    }

    /// The weight's format as run (`f32`, `q8_0`, `q4k`, ...).
    pub fn format_name(&self) -> String {
        ggml_name(self.weight_dtype())
    }

    /// The weight's format as a ggml type (dense tensors as F32, F16 or BF16).
    fn weight_dtype(&self) -> GgmlDType {
        match &self.weight {
            Weight::Candle(QMatMul::QTensor(q)) => q.dtype(),
            Weight::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => match t.dtype() {
                DType::F16 => GgmlDType::F16,
                DType::BF16 => GgmlDType::BF16,
                _ => GgmlDType::F32,
            },
            Weight::Packed(..) => GgmlDType::F32,
            Weight::Int8(w, _) => match w.format() {
                BlockFormat::Q8_0 => GgmlDType::Q8_0,
                BlockFormat::Q4_0 => GgmlDType::Q4_0,
                BlockFormat::Q4_1 => GgmlDType::Q4_1,
            },
        }
    }

    /// The kernel [`Lin::forward`] runs for an input of `rows` rows on this host.
    pub fn kernel_at(&self, rows: usize) -> Kernel {
        match &self.weight {
            Weight::Packed(w, _) => Kernel::HarnessSgemm(w.level()),
            Weight::Int8(w, _) => Kernel::HarnessQgemm(w.level()),
            Weight::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => {
                if t.device().is_cpu() {
                    Kernel::CandleGemm
                } else {
                    Kernel::Device
                }
            }
            Weight::Candle(QMatMul::QTensor(q)) => {
                if !q.device().is_cpu() {
                    Kernel::Device
                } else if !self.kernel_ok || rows >= dequantize_from_rows(q.dtype()) {
                    Kernel::Dequantized
                } else {
                    let (n, k) = q.shape().dims2().unwrap_or((0, 0));
                    candle_quantized_kernel(q.dtype(), rows, n, k)
                }
            }
        }
    }

    /// The weight and bias for one of the packed GEMMs, when the layer runs on one.
    fn packed(&self) -> Option<(&dyn PackedGemm, Option<&[f32]>)> {
        match &self.weight {
            Weight::Packed(w, bias) => Some((w, bias.as_deref())),
            Weight::Int8(w, bias) => Some((w, bias.as_deref())),
            Weight::Candle(_) => None,
        }
    }

    /// Whether the weight is in a block format (not f32).
    fn is_block_quantized(&self) -> bool {
        match &self.weight {
            Weight::Candle(QMatMul::QTensor(q)) => q.dtype() != GgmlDType::F32,
            Weight::Int8(..) => true,
            _ => false,
        }
    }

    /// The f32 weight `(out, in)`, when not quantized (for fusing projections at load and for
    /// quantizing).
    fn dense_weight(&self) -> Result<Option<Tensor>> {
        match &self.weight {
            Weight::Candle(QMatMul::Tensor(t)) => Ok(Some(t.clone())),
            Weight::Packed(p, _) => Ok(Some(Tensor::from_vec(
                p.unpack(),
                (p.n(), p.k()),
                &candle_core::Device::Cpu,
            )?)),
            _ => Ok(None),
        }
    }
}

/// A bias as the packed GEMMs take it: `Some(None)` without one, `Some(Some(values))` for an
/// f32 vector of `n`, `None` for anything else (the layer then stays on candle).
fn kernel_bias(bias: Option<&Tensor>, n: usize) -> Result<Option<Option<Vec<f32>>>> {
    Ok(match bias {
        Some(b) if b.dtype() == DType::F32 && b.dims() == [n] => Some(Some(b.to_vec1::<f32>()?)),
        Some(_) => None,
        None => Some(None),
    })
}

/// Q8_0, Q4_0 and Q4_1 weights laid out for the integer GEMM, with their f32 bias, where this CPU
/// runs it (`None`: other formats, devices and CPUs keep candle's kernels).
fn int8_from_blocks(q: &QTensor, bias: Option<&Tensor>) -> Result<Option<Weight>> {
    let format = match q.dtype() {
        GgmlDType::Q8_0 => BlockFormat::Q8_0,
        GgmlDType::Q4_0 => BlockFormat::Q4_0,
        GgmlDType::Q4_1 => BlockFormat::Q4_1,
        _ => return Ok(None),
    };
    if !q.device().is_cpu() || !PackedWeight::supported() {
        return Ok(None);
    }
    let (n, k) = q.shape().dims2()?;
    let Some(bias) = kernel_bias(bias, n)? else {
        return Ok(None);
    };
    Ok(Int8Weight::from_blocks(format, &q.data()?, n, k).map(|w| Weight::Int8(w, bias)))
}

/// How many rows make candle's quantized kernel lose to the GEMM on dequantized blocks.
///
/// Weights in block formats whose CPU kernel is a plain dot product (Q8_0, Q4_0, Q4_1, Q5_0,
/// Q5_1) are dequantized for the call and multiplied by the f32 GEMM from that many rows up,
/// as ggml's BLAS backend does for large batches: on this AVX2 host those kernels run at
/// 3-20 GFLOP/s against the GEMM's ~100 (`examples/quant_matmul.rs`, BENCHMARKS.md). Q4_1,
/// Q5_0 and Q5_1 are scalar (3 GFLOP/s), so a few rows (a generation prompt) already pay.
/// Q4K and Q6K have fast kernels and always run quantized. The weights stay quantized at rest.
///
/// The kernels quantize the activations too (to Q8_0 or Q8_1 blocks); the GEMM path rounds
/// them the same way first, so the product is the kernel's up to float summation order and a
/// result does not depend on how many rows were multiplied at once (batch size, window).
///
/// On CPUs with AVX2 and FMA, Q8_0, Q4_0 and Q4_1 never come here: they run on the integer GEMM
/// ([`qgemm`](crate::kernels::qgemm)) at every row count.
fn dequantize_from_rows(dtype: GgmlDType) -> usize {
    match dtype {
        GgmlDType::Q8_0 | GgmlDType::Q4_0 => 32,
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 => 4,
        _ => usize::MAX,
    }
}

impl Module for Lin {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.pad > 0 {
            x.pad_with_zeros(D::Minus1, 0, self.pad)?
        } else {
            x.clone()
        };
        if let Some((w, bias)) = self.packed() {
            return run_packed(w, bias, &x, None);
        }
        let Weight::Candle(weight) = &self.weight else {
            unreachable!("packed weights returned above")
        };
        let rows = x.elem_count() / x.dim(D::Minus1)?.max(1);
        if let QMatMul::QTensor(q) = weight {
            if !self.kernel_ok || rows >= dequantize_from_rows(q.dtype()) {
                // The block type the kernel's dot product quantizes activations to.
                let act = match q.dtype() {
                    GgmlDType::Q4_1 | GgmlDType::Q5_1 => GgmlDType::Q8_1,
                    _ => GgmlDType::Q8_0,
                };
                let k = x.dim(D::Minus1)?;
                let rounded = if act == GgmlDType::Q8_0 && x.device().is_cpu() && k % 32 == 0 {
                    x.contiguous()?.apply_op1_no_bwd(&RoundToQ8_0)?
                } else {
                    QTensor::quantize(&x.contiguous()?.reshape((rows, k))?, act)?
                        .dequantize(x.device())?
                        .reshape(x.shape())?
                };
                // Dequantized by candle, then packed (which costs about what candle's GEMM
                // spends laying the weight out on every call anyway).
                return Lin::new(q.dequantize(x.device())?, self.bias.clone()).forward(&rounded);
            }
        }
        let y = match (weight, x.rank()) {
            // The quantized kernels want a contiguous 2-D left-hand side.
            (QMatMul::QTensor(_), r) if r > 2 => {
                let dims = x.dims().to_vec();
                let rows: usize = dims[..r - 1].iter().product();
                let y = weight.forward(&x.contiguous()?.reshape((rows, dims[r - 1]))?)?;
                let mut out = dims[..r - 1].to_vec();
                out.push(y.dim(1)?);
                y.reshape(out)?
            }
            // Same as candle_nn::Linear: a batched matmul against the transposed weight.
            _ => weight.forward(&x)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Quantize every linear layer in `linears` to `dtype` and record it in `info`: the weight
/// bytes as run (the f32 bytes of the layers replaced by their quantized bytes) and the format.
pub fn quantize_linears(
    linears: Vec<&mut Lin>,
    dtype: GgmlDType,
    info: &mut reports::CheckpointInfo,
) -> Result<()> {
    if linears.iter().any(|l| l.is_block_quantized()) {
        candle_core::bail!(
            "{} is already quantized ({}); --student-quantize applies to f32 checkpoints",
            info.id,
            info.quantization.as_deref().unwrap_or("block format")
        );
    }
    let before = info.weight_bytes.unwrap_or(info.parameters * 4);
    let (mut old, mut new) = (0u64, 0u64);
    for l in linears {
        old += l.bytes() as u64;
        l.quantize(dtype)?;
        new += l.bytes() as u64;
    }
    info.weight_bytes = Some((before + new).saturating_sub(old));
    info.quantization = Some(format!("{} (quantized at load)", ggml_name(dtype)));
    Ok(())
}

/// For each weight format among `linears`, the kernels that multiply it on this host (see
/// [`dispatch::describe`]); layers of one format whose shapes take different kernels are
/// listed with ` | ` between them.
pub fn kernels_of(linears: Vec<&mut Lin>) -> std::collections::BTreeMap<String, String> {
    let mut by_format: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for l in linears {
        let dtype = l.weight_dtype();
        let described = dispatch::describe(dtype, |rows| l.kernel_at(rows));
        let seen = by_format.entry(ggml_name(dtype)).or_default();
        if !seen.contains(&described) {
            seen.push(described);
        }
    }
    by_format
        .into_iter()
        .map(|(f, ks)| (f, ks.join(" | ")))
        .collect()
}

/// A block format's name as llama.cpp writes it, lower-case (`q8_0`, `q4k`).
pub fn ggml_name(dtype: GgmlDType) -> String {
    format!("{dtype:?}").to_ascii_lowercase()
}

/// A linear layer with bias, as every encoder here uses.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Lin> {
    let l = candle_nn::linear(in_dim, out_dim, vb)?;
    Ok(Lin::new(l.weight().clone(), l.bias().cloned()))
}

/// A linear layer without bias (decoders).
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Lin> {
    let l = candle_nn::linear_no_bias(in_dim, out_dim, vb)?;
    Ok(Lin::new(l.weight().clone(), None))
}

/// Several `(out, in)` linear layers of one input fused into one, their outputs concatenated
/// in order: one matmul where there were several. Used for the query, key and value
/// projections. Measured on MiniLM-L6 (BENCHMARKS.md): about +8% sequences/s at 1 x 16 tokens
/// in three alternating A/B runs, no measurable change at 1 x 128.
pub fn fused_linear(in_dim: usize, out_dim: usize, parts: &[VarBuilder]) -> Result<Lin> {
    let mut weights = Vec::with_capacity(parts.len());
    let mut biases = Vec::with_capacity(parts.len());
    for vb in parts {
        let l = candle_nn::linear(in_dim, out_dim, vb.clone())?;
        weights.push(l.weight().clone());
        biases.push(
            l.bias()
                .cloned()
                .ok_or_else(|| candle_core::Error::msg("expected a bias"))?,
        );
    }
    Ok(Lin::new(
        Tensor::cat(&weights, 0)?,
        Some(Tensor::cat(&biases, 0)?),
    ))
}

/// Apply a linear layer then an activation; exact GELU after a packed layer runs inside the
/// GEMM (on the AVX2 kernel's registers, else on each output tile while it is still in L1),
/// instead of as a pass of its own.
pub fn dense_act(layer: &Lin, act: Activation, x: &Tensor) -> Result<Tensor> {
    // A padded layer (k-quant widths) pads its input in `forward`; it takes the plain path.
    if let (Some((w, bias)), Activation::GeluErf, 0) = (layer.packed(), act, layer.pad) {
        return run_packed(w, bias, x, Some(Epilogue::GeluErf));
    }
    act.forward(&layer.forward(x)?)
}

#[cfg(test)]
#[path = "linear_tests.rs"]
pub(crate) mod tests;
