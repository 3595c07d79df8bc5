//! Checkpoint files: where the weights of a folder are (safetensors or `pytorch_model.bin`),
//! JSON configs, sentence-transformers' pooling settings, head label names, and the check that
//! a tokenizer fits the model's vocabulary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use super::encoder::Pooling;

/// The weight file of a checkpoint folder.
#[derive(Debug, Clone)]
pub struct WeightFile {
    pub path: PathBuf,
    pub is_safetensors: bool,
}

/// Find the weights: `model.safetensors` preferred, `pytorch_model.bin` accepted.
pub fn find_weights(dir: &Path) -> Result<WeightFile> {
    for (name, is_safetensors) in [("model.safetensors", true), ("pytorch_model.bin", false)] {
        let path = dir.join(name);
        if path.exists() {
            return Ok(WeightFile {
                path,
                is_safetensors,
            });
        }
    }
    if dir.join("model.safetensors.index.json").exists()
        || dir.join("pytorch_model.bin.index.json").exists()
    {
        bail!("{}: sharded checkpoints are not supported yet; merge the shards into one model.safetensors", dir.display());
    }
    bail!(
        "{}: no weights found (expected model.safetensors or pytorch_model.bin)",
        dir.display()
    )
}

/// Count floating-point parameters listed in a weight file (integer buffers such as BERT's
/// `position_ids` are not parameters).
pub(crate) fn count_parameters(w: &WeightFile) -> Result<u64> {
    let is_float = |d: DType| d.is_float();
    if w.is_safetensors {
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(&w.path)? };
        Ok(st
            .tensors()
            .iter()
            .filter(|(_, v)| DType::try_from(v.dtype()).map(is_float).unwrap_or(false))
            .map(|(_, v)| v.shape().iter().product::<usize>() as u64)
            .sum())
    } else {
        let infos = candle_core::pickle::read_pth_tensor_info(&w.path, false, None)?;
        Ok(infos
            .iter()
            .filter(|i| is_float(i.dtype))
            .map(|i| i.layout.shape().elem_count() as u64)
            .sum())
    }
}

/// The weights of a checkpoint folder, opened: the file, its size, its floating-point
/// parameter count, and a VarBuilder over it (f32). Truncated or corrupt files get one message
/// that says so.
pub(crate) struct OpenedWeights {
    pub file: WeightFile,
    pub bytes_on_disk: u64,
    pub parameters: u64,
    pub vb: VarBuilder<'static>,
}

pub(crate) fn open_weights(dir: &Path, device: &Device) -> Result<OpenedWeights> {
    let file = find_weights(dir)?;
    let bytes_on_disk = std::fs::metadata(&file.path)?.len();
    let corrupt = |e: candle_core::Error| {
        anyhow::anyhow!(
            "{}: cannot read weights; the file is truncated or corrupt ({e}); download it again",
            file.path.display()
        )
    };
    let parameters =
        count_parameters(&file).map_err(|e| match e.downcast::<candle_core::Error>() {
            Ok(ce) => corrupt(ce),
            Err(e) => e,
        })?;
    let vb = if file.is_safetensors {
        unsafe { VarBuilder::from_mmaped_safetensors(&[&file.path], DType::F32, device) }
    } else {
        VarBuilder::from_pth(&file.path, DType::F32, device)
    }
    .map_err(corrupt)?;
    Ok(OpenedWeights {
        file,
        bytes_on_disk,
        parameters,
        vb,
    })
}

/// Refuse a tokenizer with more tokens than the model has embedding rows.
pub(crate) fn check_tokenizer_fits(
    dir: &Path,
    tokenizer: &Tokenizer,
    vocab_size: usize,
) -> Result<()> {
    let tok_vocab = tokenizer.get_vocab_size(true);
    if tok_vocab > vocab_size {
        bail!(
            "{}: the tokenizer has {tok_vocab} tokens but the model's embedding matrix has {vocab_size} rows; the tokenizer does not belong to this checkpoint",
            dir.display()
        );
    }
    Ok(())
}

/// The canonical form of a local path for results (the path as given when it cannot be had).
pub(crate) fn canonical(p: &Path) -> String {
    p.canonicalize()
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// Read a JSON file into `T`, with the path in every error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a valid config", path.display()))
}

/// Label names from `id2label` (ordered by id), or `LABEL_i` from `num_labels`.
pub(crate) fn head_label_names(
    id2label: &Option<BTreeMap<String, String>>,
    num_labels: Option<usize>,
) -> Vec<String> {
    if let Some(map) = id2label {
        let mut pairs: Vec<(usize, String)> = map
            .iter()
            .filter_map(|(k, v)| k.parse::<usize>().ok().map(|k| (k, v.clone())))
            .collect();
        pairs.sort();
        if !pairs.is_empty() {
            return pairs.into_iter().map(|(_, v)| v).collect();
        }
    }
    (0..num_labels.unwrap_or(2))
        .map(|i| format!("LABEL_{i}"))
        .collect()
}

/// sentence-transformers' pooling and normalisation settings, mean pooling when absent.
pub(crate) fn pooling_settings(dir: &Path) -> Result<(Pooling, bool)> {
    let pooling_cfg = dir.join("1_Pooling").join("config.json");
    let pooling = if pooling_cfg.exists() {
        let v: serde_json::Value = read_json(&pooling_cfg)?;
        let on = |k: &str| v.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
        if on("pooling_mode_cls_token") {
            Pooling::Cls
        } else if on("pooling_mode_max_tokens") {
            Pooling::Max
        } else if on("pooling_mode_mean_sqrt_len_tokens") {
            Pooling::MeanSqrtLen
        } else {
            Pooling::Mean
        }
    } else {
        Pooling::Mean
    };
    let modules = dir.join("modules.json");
    let normalize = modules.exists() && {
        let v: serde_json::Value = read_json(&modules)?;
        v.as_array().is_some_and(|mods| {
            mods.iter().any(|m| {
                m.get("type")
                    .and_then(|t| t.as_str())
                    .is_some_and(|t| t.ends_with(".Normalize"))
            })
        })
    };
    Ok((pooling, normalize))
}
