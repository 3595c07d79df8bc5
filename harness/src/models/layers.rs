//! Building blocks shared by the encoder ports: activations, layer norms that accept both the
//! current (`weight`/`bias`) and the original TF-converted (`gamma`/`beta`) tensor names, the
//! additive attention mask, and multi-head attention.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{LayerNorm, VarBuilder};

use crate::kernels::dispatch::{self, candle_quantized_kernel, Kernel};
use crate::kernels::qgemm::{round_to_q8_0, BlockFormat, Int8Weight};
use crate::kernels::sgemm::{Epilogue, PackedGemm, PackedWeight};

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
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}

/// Exact-GELU `x/2 (1 + erf(x/sqrt 2))` on the CPU with a branch-free rational erf (Eigen's
/// `generic_fast_erf_float`: odd degree-13 over even degree-8 polynomial, clamped to
/// [-4, 4], error about 1e-7), which the compiler vectorises, split over the cores. candle's
/// `gelu_erf` evaluates a scalar erf on one thread: about 9% of a BERT-base forward (issue 6).
/// Parity tests hold it to transformers' exact GELU within 1e-4 at the outputs.
pub struct FastGeluErf;

fn gelu_erf_slice(src: &[f32], dst: &mut [f32]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = gelu_erf(v);
    }
}

/// [`gelu_erf_slice`] in place: the epilogue of the packed GEMM, on output rows still in L1.
pub fn gelu_erf_in_place(xs: &mut [f32]) {
    for x in xs {
        *x = gelu_erf(*x);
    }
}

#[inline(always)]
fn gelu_erf(v: f32) -> f32 {
    const A: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const B: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    let x = (v * std::f32::consts::FRAC_1_SQRT_2).clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = A[0];
    for a in &A[1..] {
        p = p * x2 + a;
    }
    let mut q = B[0];
    for b in &B[1..] {
        q = q * x2 + b;
    }
    0.5 * v * (1.0 + x * p / q)
}

impl candle_core::CustomOp1 for FastGeluErf {
    fn name(&self) -> &'static str {
        "fast-gelu-erf"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        // Chunks of 32K values: a small tensor is one chunk, on one thread.
        map_chunks_parallel(storage, layout, self.name(), 1 << 15, gelu_erf_slice)
    }
}

/// The f32 values of a custom op's contiguous input (the ops here are applied to
/// `.contiguous()` tensors; anything else is refused, naming the op).
fn contiguous_f32<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> Result<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&storage.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("{op} needs a contiguous f32 input"),
    }
}

/// An element-wise custom op on the CPU: `f` maps each `chunk`-long stretch of the contiguous
/// f32 input to the same stretch of a new output of the same shape, stretches spread over
/// rayon's threads.
fn map_chunks_parallel(
    storage: &candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
    chunk: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
    use rayon::prelude::*;
    let src = contiguous_f32(storage, layout, op)?;
    let mut dst = vec![0f32; src.len()];
    src.par_chunks(chunk)
        .zip(dst.par_chunks_mut(chunk))
        .for_each(|(s, d)| f(s, d));
    Ok((candle_core::CpuStorage::F32(dst), layout.shape().clone()))
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
    /// Q8_0 or Q4_0 blocks laid out once for the integer GEMM of [`qgemm`](crate::kernels::qgemm)
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
        match &self.weight {
            Weight::Candle(QMatMul::QTensor(q)) => ggml_name(q.dtype()),
            Weight::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => {
                format!("{:?}", t.dtype()).to_ascii_lowercase()
            }
            Weight::Packed(..) => "f32".into(),
            Weight::Int8(w, _) => match w.format() {
                BlockFormat::Q8_0 => "q8_0".into(),
                BlockFormat::Q4_0 => "q4_0".into(),
            },
        }
    }

    /// The kernel [`Lin::forward`] runs for an input of `rows` rows on this host.
    pub fn kernel_at(&self, rows: usize) -> Kernel {
        match &self.weight {
            Weight::Packed(..) => Kernel::HarnessSgemm,
            Weight::Int8(..) => Kernel::HarnessQgemm,
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

/// Round f32 values (rows a multiple of 32 wide) to what Q8_0 blocks hold, exactly as
/// candle's `BlockQ8_0::from_float` then `to_float` do (`d = amax / 127` stored as f16,
/// `q = round(x / d)`, value `q * d`), in one pass over rayon's threads instead of candle's
/// single-threaded quantize into blocks and dequantize out of them.
struct RoundToQ8_0;

impl candle_core::CustomOp1 for RoundToQ8_0 {
    fn name(&self) -> &'static str {
        "round-to-q8_0"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        if !layout.shape().elem_count().is_multiple_of(32) {
            candle_core::bail!("round-to-q8_0 needs whole 32-value blocks");
        }
        // 64 blocks per chunk; chunk edges fall on block edges.
        map_chunks_parallel(storage, layout, self.name(), 32 * 64, |src, dst| {
            let (mut q, mut d) = ([0i16; 32 * 64], [0f32; 64]);
            let (q, d) = (&mut q[..src.len()], &mut d[..src.len() / 32]);
            round_to_q8_0(src, q, d);
            for ((dst, q), &scale) in dst
                .chunks_exact_mut(32)
                .zip(q.chunks_exact(32))
                .zip(d.iter())
            {
                for (v, &q) in dst.iter_mut().zip(q) {
                    *v = q as f32 * scale;
                }
            }
        })
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

/// Q8_0 and Q4_0 weights laid out for the integer GEMM, with their f32 bias, where this CPU
/// runs it (`None`: other formats, devices and CPUs keep candle's kernels).
fn int8_from_blocks(q: &QTensor, bias: Option<&Tensor>) -> Result<Option<Weight>> {
    let format = match q.dtype() {
        GgmlDType::Q8_0 => BlockFormat::Q8_0,
        GgmlDType::Q4_0 => BlockFormat::Q4_0,
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

/// `x Wᵀ + bias` through one of the packed GEMMs, then `epilogue` on the outputs.
fn run_packed(
    weight: &dyn PackedGemm,
    bias: Option<&[f32]>,
    x: &Tensor,
    epilogue: Option<Epilogue>,
) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        candle_core::bail!(
            "a packed linear layer takes f32 inputs on the CPU, got {:?} on {:?}",
            x.dtype(),
            x.device()
        );
    }
    x.contiguous()?.apply_op1_no_bwd(&PackedLinear {
        weight,
        bias,
        epilogue,
    })
}

/// A packed weight and its bias as a candle op on `(.., k)` inputs.
struct PackedLinear<'a> {
    weight: &'a dyn PackedGemm,
    bias: Option<&'a [f32]>,
    /// Applied to the finished outputs (an activation).
    epilogue: Option<Epilogue<'a>>,
}

impl candle_core::CustomOp1 for PackedLinear<'_> {
    fn name(&self) -> &'static str {
        "packed-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let (n, k) = (self.weight.n(), self.weight.k());
        let dims = layout.shape().dims();
        if dims.last() != Some(&k) {
            candle_core::bail!("linear layer expects inputs of width {k}, got shape {dims:?}");
        }
        let m = x.len() / k.max(1);
        let mut out = vec![0f32; m * n];
        self.weight.matmul_then(
            x,
            m,
            self.bias,
            &mut out,
            candle_core::utils::get_num_threads(),
            self.epilogue,
        );
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from(shape),
        ))
    }
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
/// On CPUs with AVX2 and FMA, Q8_0 and Q4_0 never come here: they run on the integer GEMM
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
    info.quantization = Some(format!("{} (--student-quantize)", ggml_name(dtype)));
    Ok(())
}

/// For each weight format among `linears`, the kernels that multiply it on this host (see
/// [`dispatch::describe`]); layers of one format whose shapes take different kernels are
/// listed with ` | ` between them.
pub fn kernels_of(linears: Vec<&mut Lin>) -> std::collections::BTreeMap<String, String> {
    let mut by_format: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for l in linears {
        let format = l.format_name();
        let dtype = match &l.weight {
            Weight::Candle(QMatMul::QTensor(q)) => q.dtype(),
            Weight::Int8(w, _) if w.format() == BlockFormat::Q4_0 => GgmlDType::Q4_0,
            Weight::Int8(..) => GgmlDType::Q8_0,
            _ => GgmlDType::F32,
        };
        let described = dispatch::describe(dtype, |rows| l.kernel_at(rows));
        let seen = by_format.entry(format).or_default();
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

/// An optional block-format flag (`--student-quantize`, `--quantize`), checked before
/// anything is loaded; the error names the flag.
pub fn parse_quant_flag(
    value: Option<&str>,
    flag: &str,
) -> std::result::Result<Option<GgmlDType>, String> {
    value
        .map(parse_quant)
        .transpose()
        .map_err(|e| format!("{flag}: {e}"))
}

/// The quantization formats `--student-quantize` accepts.
pub fn parse_quant(name: &str) -> std::result::Result<GgmlDType, String> {
    match name.to_ascii_lowercase().as_str() {
        "q8_0" => Ok(GgmlDType::Q8_0),
        "q4_0" => Ok(GgmlDType::Q4_0),
        "q4k" | "q4_k" => Ok(GgmlDType::Q4K),
        "q5k" | "q5_k" => Ok(GgmlDType::Q5K),
        "q6k" | "q6_k" => Ok(GgmlDType::Q6K),
        other => Err(format!(
            "unknown quantization '{other}' (q8_0, q4_0, q4k, q5k or q6k)"
        )),
    }
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

/// Additive causal mask `(1, 1, seq, past + seq)` for `seq` new queries after `past` cached
/// positions: 0 where a query may see a key (key position <= query position), the dtype's
/// minimum elsewhere.
pub fn causal_bias(seq: usize, past: usize, device: &candle_core::Device) -> Result<Tensor> {
    let keys = past + seq;
    let bias: Vec<f32> = (0..seq)
        .flat_map(|q| (0..keys).map(move |k| if k > past + q { f32::MIN } else { 0.0 }))
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
    /// Append this step's `(batch, heads, seq, head_dim)` keys and values for layer `i`;
    /// return everything cached for it.
    pub fn extend(&mut self, i: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= i {
            self.layers.resize(i + 1, None);
        }
        let kv = match self.layers[i].take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
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

/// Scaled dot-product attention for every (sequence, head) pair without reshaping copies:
/// the GEMM reads each head's queries, keys and values straight out of the fused projection
/// through strides, scores stay in a per-head buffer (scale applied by the GEMM, padding bias
/// and softmax in one pass), and each head's context is written into its columns of the
/// output. Heads are spread over the cores with single-threaded GEMMs, instead of
/// multi-threaded GEMMs on matrices too small to share (issue 6).
pub struct FusedAttention {
    pub heads: usize,
}

impl candle_core::CustomOp2 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (Some((a1, b1)), Some((a2, b2))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("fused-attention needs contiguous inputs");
        };
        let qkv = &s1.as_slice::<f32>()?[a1..b1];
        let bias = &s2.as_slice::<f32>()?[a2..b2];
        let (b, s, h3) = l1.shape().dims3()?;
        let h = h3 / 3;
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0f32; b * s * h];
        let items = b * self.heads;
        let threads = candle_core::utils::get_num_threads().clamp(1, items.max(1));
        let per = items.div_ceil(threads);
        let out_ptr = out.as_mut_ptr() as usize;
        // On rayon's running pool (no thread start per call), one job per thread's share.
        use rayon::prelude::*;
        (0..threads).into_par_iter().for_each(|t| {
            let mut scores = vec![0f32; s * s];
            for item in t * per..((t + 1) * per).min(items) {
                let (bi, hi) = (item / self.heads, item % self.heads);
                let base = qkv[bi * s * h3..].as_ptr();
                // SAFETY: offsets stay inside this sequence's rows of qkv; every
                // (sequence, head) writes only its own d columns of its s output rows,
                // so no two items write the same element.
                unsafe {
                    let (q, k, v) = (
                        base.add(hi * d),
                        base.add(h + hi * d),
                        base.add(2 * h + hi * d),
                    );
                    // scores = scale * q k^T: (s x d) by (d x s).
                    gemm::gemm(
                        s,
                        s,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        s as isize,
                        false,
                        q,
                        1,
                        h3 as isize,
                        k,
                        h3 as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                    let bias = &bias[bi * s..(bi + 1) * s];
                    for row in scores.chunks_mut(s) {
                        let mut max = f32::NEG_INFINITY;
                        for (x, &m) in row.iter_mut().zip(bias) {
                            *x += m;
                            max = max.max(*x);
                        }
                        let mut sum = 0f32;
                        for x in row.iter_mut() {
                            *x = (*x - max).exp();
                            sum += *x;
                        }
                        let inv = 1.0 / sum;
                        for x in row.iter_mut() {
                            *x *= inv;
                        }
                    }
                    // context = probs v: (s x s) by (s x d), into the head's columns.
                    let dst = (out_ptr as *mut f32).add(bi * s * h + hi * d);
                    gemm::gemm(
                        s,
                        d,
                        s,
                        dst,
                        1,
                        h as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        s as isize,
                        v,
                        1,
                        h3 as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
        });
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from((b, s, h)),
        ))
    }
}

/// Mean of `hidden` (batch, seq, h) over positions where `mask` (batch, seq) is 1.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    let counts = m.sum(1)?.clamp(1e-9, f64::INFINITY)?;
    summed.broadcast_div(&counts)
}

/// Apply a linear layer then an activation; exact GELU after a packed layer runs inside the
/// GEMM, on each output tile while it is still in L1, instead of as a pass of its own.
pub fn dense_act(layer: &Lin, act: Activation, x: &Tensor) -> Result<Tensor> {
    // A padded layer (k-quant widths) pads its input in `forward`; it takes the plain path.
    if let (Some((w, bias)), Activation::GeluErf, 0) = (layer.packed(), act, layer.pad) {
        return run_packed(w, bias, x, Some(&gelu_erf_in_place));
    }
    act.forward(&layer.forward(x)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A deterministic pseudo-random matrix with entries in [-1, 1).
    fn matrix(rows: usize, cols: usize, seed: u64) -> Tensor {
        let mut s = seed;
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
        let diff = (a - b).unwrap().sqr().unwrap().sum_all().unwrap();
        let norm = b.sqr().unwrap().sum_all().unwrap();
        (diff.to_scalar::<f32>().unwrap() / norm.to_scalar::<f32>().unwrap()).sqrt()
    }

    #[test]
    fn packed_and_candle_layouts_give_the_same_linear_layer() {
        // Lin::new packs the weight on AVX2/FMA CPUs; Lin::tied keeps candle's layout. Same
        // layer, (batch, seq, k) input, with and without bias: same outputs up to summation
        // order, same parameter count and bytes, and quantizing either gives the same blocks.
        let (w, b) = (matrix(37, 70, 11), matrix(1, 37, 12).squeeze(0).unwrap());
        let x = matrix(3 * 5, 70, 13).reshape((3, 5, 70)).unwrap();
        for bias in [None, Some(b)] {
            let packed = Lin::new(w.clone(), bias.clone());
            let candle = Lin::tied(w.clone(), bias.clone());
            assert_eq!(
                matches!(packed.weight, Weight::Packed(..)),
                PackedWeight::supported()
            );
            let (got, want) = (packed.forward(&x).unwrap(), candle.forward(&x).unwrap());
            assert_eq!(got.dims(), &[3, 5, 37]);
            assert!(relative_error(&got, &want) < 1e-6);
            assert_eq!(packed.parameters(), candle.parameters());
            assert_eq!(packed.bytes(), candle.bytes());
            let (mut qp, mut qc) = (packed, candle);
            qp.quantize(GgmlDType::Q8_0).unwrap();
            qc.quantize(GgmlDType::Q8_0).unwrap();
            let (got, want) = (qp.forward(&x).unwrap(), qc.forward(&x).unwrap());
            assert_eq!(
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
    }

    #[test]
    fn gelu_fused_into_the_packed_gemm_equals_the_separate_pass() {
        let (w, b) = (matrix(40, 24, 16), matrix(1, 40, 17).squeeze(0).unwrap());
        let x = (matrix(2 * 9, 24, 18).reshape((2, 9, 24)).unwrap() * 3.0).unwrap();
        let l = Lin::new(w, Some(b));
        let fused = dense_act(&l, Activation::GeluErf, &x).unwrap();
        let separate = Activation::GeluErf
            .forward(&l.forward(&x).unwrap())
            .unwrap();
        assert_eq!(
            fused.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            separate.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn q8_0_and_q4_0_layers_run_on_the_integer_gemm_and_agree_with_candles_kernel() {
        // 37 outputs: two full panels and a partial one; 96 = three blocks per row.
        let (w, b, x) = (matrix(37, 96, 19), matrix(1, 37, 20), matrix(5, 96, 21));
        let b = b.flatten_all().unwrap();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0] {
            let mut layer = Lin::new(w.clone(), Some(b.clone()));
            layer.quantize(dtype).unwrap();
            assert_eq!(
                matches!(layer.weight, Weight::Int8(..)),
                PackedWeight::supported(),
                "{dtype:?}"
            );
            let got = layer.forward(&x).unwrap();
            // k = 96 keeps candle on ggml's dot product (Q8_0 activations) on every host; at
            // k % 256 == 0 a VNNI host would take its Q8K tiles (kernels::dispatch).
            assert!(matches!(
                candle_quantized_kernel(dtype, 5, 37, 96),
                Kernel::CandleGgmlDot { .. }
            ));
            let q = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap()).unwrap();
            let want = q.forward(&x).unwrap().broadcast_add(&b).unwrap();
            let diff = (&got - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "{dtype:?}: {diff}");
        }
        // Other formats stay on candle's kernels.
        let mut q4k = Lin::new(matrix(4, 256, 22), None);
        q4k.quantize(GgmlDType::Q4K).unwrap();
        assert!(matches!(q4k.weight, Weight::Candle(QMatMul::QTensor(_))));
    }

    #[test]
    fn each_weight_format_names_the_kernel_that_runs_it() {
        let mut f32_layer = Lin::new(matrix(32, 256, 30), None);
        let mut q8 = Lin::new(matrix(32, 256, 31), None);
        q8.quantize(GgmlDType::Q8_0).unwrap();
        let mut q4k = Lin::new(matrix(32, 256, 32), None);
        q4k.quantize(GgmlDType::Q4K).unwrap();
        let kernels = kernels_of(vec![&mut f32_layer, &mut q8, &mut q4k]);
        assert_eq!(
            kernels.keys().collect::<Vec<_>>(),
            ["f32", "q4k", "q8_0"],
            "{kernels:?}"
        );
        if PackedWeight::supported() {
            assert_eq!(kernels["f32"], "harness-sgemm-avx2");
            assert_eq!(kernels["q8_0"], "harness-qgemm-avx2, activations q8_0");
        } else {
            eprintln!("no AVX2/FMA: f32 and Q8_0 are candle's here");
            assert_eq!(kernels["f32"], "candle-gemm");
        }
        // Q4K is candle's on every CPU; its activations are Q8K blocks whatever the tier.
        assert!(kernels["q4k"].starts_with("candle-"), "{}", kernels["q4k"]);
        assert!(
            kernels["q4k"].ends_with("activations q8k"),
            "{}",
            kernels["q4k"]
        );
        // Two shapes of one format that take different kernels are both listed.
        let mut narrow = Lin::new(matrix(17, 256, 33), None);
        narrow.quantize(GgmlDType::Q6K).unwrap();
        let mut wide = Lin::new(matrix(32, 256, 34), None);
        wide.quantize(GgmlDType::Q6K).unwrap();
        let q6k = &kernels_of(vec![&mut narrow, &mut wide])["q6k"];
        if dispatch::candle_x86_level().is_some() {
            assert!(q6k.contains(" | "), "{q6k}");
            assert!(q6k.contains("candle-repack-"), "{q6k}");
        }
    }

    #[test]
    fn rounding_to_q8_0_matches_candles_quantize_then_dequantize_bit_for_bit() {
        // Values over several magnitudes, a block of zeros (scale 0) and exact halves.
        let mut x = (matrix(6, 128, 21) * 7.5).unwrap();
        x = x
            .slice_assign(
                &[0..1, 0..32],
                &Tensor::zeros((1, 32), DType::F32, &Device::Cpu).unwrap(),
            )
            .unwrap();
        let halves: Vec<f32> = (0..32).map(|i| i as f32 - 15.5).collect();
        x = x
            .slice_assign(
                &[1..2, 32..64],
                &Tensor::from_vec(halves, (1, 32), &Device::Cpu).unwrap(),
            )
            .unwrap();
        let want = QTensor::quantize(&x, GgmlDType::Q8_0)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let got = x.apply_op1_no_bwd(&RoundToQ8_0).unwrap();
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn a_packed_layer_refuses_inputs_of_the_wrong_width() {
        let l = Lin::new(matrix(8, 16, 14), None);
        let err = l.forward(&matrix(2, 15, 15)).unwrap_err().to_string();
        assert!(err.contains("16") && err.contains("15"), "{err}");
    }

    #[test]
    fn quantized_linear_stays_close_to_f32_even_when_the_width_is_not_a_block_multiple() {
        // 384 (MiniLM's width) is a multiple of Q8_0's 32-wide blocks but not of the k-quants'
        // 256: the weight and input are zero-padded, which must not change the product.
        let (w, b) = (matrix(48, 384, 1), matrix(1, 48, 2).squeeze(0).unwrap());
        let x = matrix(2 * 5, 384, 3).reshape((2, 5, 384)).unwrap();
        let dense = Lin::new(w.clone(), Some(b.clone()));
        let want = dense.forward(&x).unwrap();
        for (dtype, tolerance) in [
            (GgmlDType::Q8_0, 0.01),
            (GgmlDType::Q6K, 0.02),
            (GgmlDType::Q4K, 0.1),
        ] {
            let mut q = Lin::new(w.clone(), Some(b.clone()));
            q.quantize(dtype).unwrap();
            let got = q.forward(&x).unwrap();
            assert_eq!(got.dims(), want.dims());
            let err = relative_error(&got, &want);
            assert!(err < tolerance, "{dtype:?}: relative error {err}");
            assert!(err > 0.0, "{dtype:?} changed nothing");
            assert_eq!(q.parameters(), 48 * 384 + 48);
            assert!(
                q.bytes() < dense.bytes() / 3,
                "{dtype:?}: {} bytes",
                q.bytes()
            );
        }
    }

    #[test]
    fn many_rows_agree_with_one_row_at_a_time() {
        // Q4_1: 40 rows at once go through dequantized blocks and the f32 GEMM, one row at a
        // time through candle's Q4_1 kernel; both round the activations to Q8_1 blocks, so
        // they agree to float summation order. Q8_0 (the integer GEMM on AVX2 CPUs, candle's
        // kernel and the dequantized path elsewhere) likewise.
        let w = matrix(64, 96, 4);
        let x = matrix(40, 96, 5);
        let f32_result = Lin::new(w.clone(), None).forward(&x).unwrap();
        for (dtype, tolerance) in [(GgmlDType::Q8_0, 0.01), (GgmlDType::Q4_1, 0.1)] {
            let mut q = Lin::new(w.clone(), None);
            q.quantize(dtype).unwrap();
            let together = q.forward(&x).unwrap();
            let one_by_one = Tensor::cat(
                &(0..40)
                    .map(|i| q.forward(&x.narrow(0, i, 1).unwrap()).unwrap())
                    .collect::<Vec<_>>(),
                0,
            )
            .unwrap();
            // Q8_1 keeps each block's sum in f16, which the kernel uses for Q4_1's offsets: a
            // few 1e-4 of rounding, still two orders below the quantization error.
            let err = relative_error(&one_by_one, &together);
            assert!(err < 1e-3, "{dtype:?}: {err}");
            let err = relative_error(&together, &f32_result);
            assert!(err > 0.0 && err < tolerance, "{dtype:?}: {err}");
        }
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
    fn quantizing_quantized_weights_again_is_refused() {
        let mut l = Lin::new(matrix(8, 64, 1), None);
        l.quantize(GgmlDType::Q8_0).unwrap();
        let mut info = reports::CheckpointInfo {
            id: "m.gguf".into(),
            resolved: "m.gguf".into(),
            architecture: "llama".into(),
            parameters: 512,
            bytes_on_disk: 600,
            head_labels: None,
            weight_bytes: Some(600),
            quantization: Some("q8_0 (gguf)".into()),
            tokenizer: None,
            kernels: Default::default(),
        };
        let err = quantize_linears(vec![&mut l], GgmlDType::Q4K, &mut info)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.gguf is already quantized (q8_0 (gguf))"),
            "{err}"
        );
        // An f32 layer is quantized and the bytes as run are recorded.
        let mut f = Lin::new(matrix(8, 64, 2), None);
        info.quantization = None;
        info.weight_bytes = None;
        quantize_linears(vec![&mut f], GgmlDType::Q8_0, &mut info).unwrap();
        assert_eq!(
            info.quantization.as_deref(),
            Some("q8_0 (--student-quantize)")
        );
        // 512 f32 parameters (2048 bytes) become 16 Q8_0 blocks: 34 bytes each as candle holds
        // them (f16 scale), 36 as the integer GEMM does (f32 scale).
        let block = if PackedWeight::supported() { 36 } else { 34 };
        assert_eq!(info.weight_bytes, Some(16 * block));
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

    #[test]
    fn quantization_names_parse() {
        assert_eq!(parse_quant("q8_0").unwrap(), GgmlDType::Q8_0);
        assert_eq!(parse_quant("Q4K").unwrap(), GgmlDType::Q4K);
        assert_eq!(parse_quant("q6_k").unwrap(), GgmlDType::Q6K);
        let err = parse_quant("q3").unwrap_err();
        assert!(err.contains("unknown quantization 'q3'"), "{err}");
    }

    #[test]
    fn causal_bias_after_cached_positions_sees_the_past() {
        let b = causal_bias(2, 3, &Device::Cpu).unwrap();
        let rows = b
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(rows[0][..4], [0.0; 4]);
        assert_eq!(rows[0][4], f32::MIN);
        assert_eq!(rows[1], vec![0.0; 5]);
    }
}
