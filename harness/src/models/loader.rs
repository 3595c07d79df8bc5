//! One way to load any model the run loop needs: an encoder, a causal LM (folder or GGUF) or
//! the mock, as a `Box<dyn Backend>`, quantized or dequantized as the plan says.

use anyhow::Result;
use candle_core::quantized::GgmlDType;
use candle_core::Device;

use super::decoder::DecoderBackend;
use super::mock::MockBackend;
use super::resolve::{self, ModelRef};
use super::{Backend, EncoderBackend, LoadOptions};

/// Which family a model argument is loaded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Encoder,
    Decoder,
}

/// A model as the run loop loads it: the checkpoint and what is done to it after loading. Two
/// specs that are equal are the same model (a quantized student is a model of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub ckpt: ModelRef,
    pub family: Family,
    /// Quantize every linear layer to this format after loading (`--student-quantize`).
    pub quantize: Option<GgmlDType>,
    /// Dequantize a GGUF file to f32 (`--dequantize-teacher`).
    pub dequantize: bool,
}

/// Fail before any cell is computed when a model of the run cannot be loaded: every model
/// but the first is loaded once and dropped (the first is loaded for its cells straight
/// away). A load is the check that covers everything that can be wrong with a checkpoint
/// (missing or truncated weights, a config or tokenizer that does not fit); for the models
/// here it takes a second or two, and it keeps the rule that bad input leaves no results.
pub fn check_all(specs: &[ModelSpec], device: &Device, max_length: Option<usize>) -> Result<()> {
    // In run order, so that the first bad model is the one reported; the first model's files
    // are at least found (a Hub model downloaded) before the others load.
    if let Some(first) = specs.first() {
        preflight(first)?;
    }
    for spec in specs.iter().skip(1) {
        drop(load(spec, device, max_length)?);
        crate::alloc::release_free_memory();
    }
    Ok(())
}

/// The cheap check: the snapshot is found (a Hub model is downloaded, as loading would) and a
/// mock's options parse.
fn preflight(spec: &ModelSpec) -> Result<()> {
    match &spec.ckpt {
        ModelRef::Mock(s) => MockBackend::from_spec(s).map(|_| ()),
        ckpt => {
            let (_, dir, _) = resolve::local_snapshot(ckpt)?;
            if !dir.exists() {
                anyhow::bail!("model folder not found: {}", dir.display());
            }
            Ok(())
        }
    }
}

/// Load the model a spec names.
pub fn load(
    spec: &ModelSpec,
    device: &Device,
    max_length: Option<usize>,
) -> Result<Box<dyn Backend>> {
    if let ModelRef::Mock(s) = &spec.ckpt {
        let mut mock = MockBackend::from_spec(s)?;
        // A weightless mock has nothing to round; it says it was asked, so a results file
        // never shows a "quantized" student with an unquantized checkpoint.
        if let Some(format) = spec.quantize {
            mock.mark_quantized(&format!("{format:?}").to_ascii_lowercase());
        }
        return Ok(Box::new(mock));
    }
    let (id, dir, resolved) = resolve::local_snapshot(&spec.ckpt)?;
    match spec.family {
        Family::Encoder => {
            let opts = LoadOptions {
                device: device.clone(),
                max_length,
            };
            finish(
                EncoderBackend::load(&id, &dir, &opts)?,
                resolved,
                spec.quantize,
            )
        }
        Family::Decoder => finish(
            DecoderBackend::load(&id, &dir, device, spec.dequantize)?,
            resolved,
            spec.quantize,
        ),
    }
}

/// What the loader does to a loaded checkpoint of either family.
trait Loaded: Backend + 'static {
    fn set_resolved(&mut self, resolved: String);
    fn quantize(&mut self, dtype: GgmlDType) -> Result<()>;
}

impl Loaded for EncoderBackend {
    fn set_resolved(&mut self, resolved: String) {
        EncoderBackend::set_resolved(self, resolved)
    }
    fn quantize(&mut self, dtype: GgmlDType) -> Result<()> {
        EncoderBackend::quantize(self, dtype)
    }
}

impl Loaded for DecoderBackend {
    fn set_resolved(&mut self, resolved: String) {
        DecoderBackend::set_resolved(self, resolved)
    }
    fn quantize(&mut self, dtype: GgmlDType) -> Result<()> {
        DecoderBackend::quantize(self, dtype)
    }
}

/// Record where a Hub checkpoint came from and quantize it when asked.
fn finish<B: Loaded>(
    mut b: B,
    resolved: Option<String>,
    quantize: Option<GgmlDType>,
) -> Result<Box<dyn Backend>> {
    if let Some(r) = resolved {
        b.set_resolved(r);
    }
    if let Some(q) = quantize {
        let id = b.info().id.clone();
        b.quantize(q)
            .map_err(|e| e.context(format!("{id}: cannot quantize to {q:?}")))?;
    }
    Ok(Box::new(b))
}
