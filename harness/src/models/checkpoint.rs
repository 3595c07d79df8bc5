//! Checkpoint files: where the weights of a folder are (safetensors or `pytorch_model.bin`, each
//! whole or in shards),
//! JSON configs, sentence-transformers' pooling settings, head label names, and the check that
//! a tokenizer fits the model's vocabulary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use super::encoder::Pooling;

/// The weights of a checkpoint folder: one file, or the shards that an index names
/// (`model.safetensors.index.json`, as the Hub stores models of more than a few GB, or the
/// older `pytorch_model.bin.index.json`).
#[derive(Debug, Clone)]
pub struct WeightFile {
    /// The weight file, or the index of a sharded checkpoint.
    pub path: PathBuf,
    pub is_safetensors: bool,
    /// Every file holding tensors: `path` itself, or the index's shards in name order.
    pub files: Vec<PathBuf>,
}

impl WeightFile {
    /// Bytes of every file holding tensors, and the newest modification time among them
    /// (seconds since the epoch): what changes when any shard is replaced.
    pub fn stamp(&self) -> Option<(u64, u64)> {
        files_stamp(&self.files)
    }
}

/// Total bytes of `files` and their newest modification time (seconds since the epoch);
/// `None` when one cannot be read.
pub fn files_stamp(files: &[PathBuf]) -> Option<(u64, u64)> {
    let mut bytes = 0;
    let mut newest = 0;
    for f in files {
        let m = std::fs::metadata(f).ok()?;
        bytes += m.len();
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        newest = newest.max(mtime);
    }
    Some((bytes, newest))
}

/// The files a weight index's `weight_map` names, each once, in name order; `None` without a
/// `weight_map`.
pub fn shard_names(index: &serde_json::Value) -> Option<Vec<&str>> {
    let map = index.get("weight_map")?.as_object()?;
    let mut names: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    Some(names)
}

/// The shard files a weight index names (its `weight_map` values), each once, in name order;
/// every one must be beside the index.
pub fn shards_of_index(index: &Path) -> Result<Vec<PathBuf>> {
    let raw: serde_json::Value = read_json(index)?;
    let names = shard_names(&raw)
        .with_context(|| format!("{}: no weight_map; not a weight index", index.display()))?;
    if names.is_empty() {
        bail!("{}: the weight_map names no files", index.display());
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    if let Some(bad) = names
        .iter()
        .find(|n| n.contains('/') || n.contains('\\') || n.starts_with('.'))
    {
        bail!(
            "{}: shard name '{bad}' is not a file beside the index",
            index.display()
        );
    }
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !dir.join(n).exists())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: {} of its {} shards are missing ({}); the download is incomplete, fetch them again",
            index.display(),
            missing.len(),
            names.len(),
            missing.join(", ")
        );
    }
    Ok(names.iter().map(|n| dir.join(n)).collect())
}

/// Find the weights: `model.safetensors` preferred, then the shards of
/// `model.safetensors.index.json`, then `pytorch_model.bin`, then the shards of
/// `pytorch_model.bin.index.json`.
pub fn find_weights(dir: &Path) -> Result<WeightFile> {
    // (file, is_safetensors), in order of preference; an `.index.json` names shards.
    for (name, is_safetensors) in [
        ("model.safetensors", true),
        ("model.safetensors.index.json", true),
        ("pytorch_model.bin", false),
        ("pytorch_model.bin.index.json", false),
    ] {
        let path = dir.join(name);
        if path.exists() {
            let files = if name.ends_with(".index.json") {
                shards_of_index(&path)?
            } else {
                vec![path.clone()]
            };
            return Ok(WeightFile {
                path,
                is_safetensors,
                files,
            });
        }
    }
    bail!(
        "{}: no weights found (expected model.safetensors, model.safetensors.index.json with its shards, pytorch_model.bin, or pytorch_model.bin.index.json with its shards)",
        dir.display()
    )
}

/// Count floating-point parameters of the tensors whose names start with one of `prefixes`
/// (a multimodal checkpoint's language model).
pub(crate) fn count_parameters_under(w: &WeightFile, prefixes: &[&str]) -> Result<u64> {
    count_float_parameters(w, &|name| prefixes.iter().any(|p| name.starts_with(p)))
}

/// Count floating-point parameters listed in a weight file (integer buffers such as BERT's
/// `position_ids` are not parameters).
pub(crate) fn count_parameters(w: &WeightFile) -> Result<u64> {
    count_float_parameters(w, &|_| true)
}

/// Floating-point elements of the tensors whose names `keep` accepts, read from the files'
/// headers (nothing is loaded).
fn count_float_parameters(w: &WeightFile, keep: &dyn Fn(&str) -> bool) -> Result<u64> {
    let is_float = |d: DType| d.is_float();
    if w.is_safetensors {
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&w.files)? };
        Ok(st
            .tensors()
            .iter()
            .filter(|(name, _)| keep(name))
            .filter(|(_, v)| DType::try_from(v.dtype()).map(is_float).unwrap_or(false))
            .map(|(_, v)| v.shape().iter().product::<usize>() as u64)
            .sum())
    } else {
        let mut total = 0;
        for file in &w.files {
            let infos = candle_core::pickle::read_pth_tensor_info(file, false, None).map_err(
                |e| match w.files.len() {
                    1 => e,
                    _ => candle_core::Error::Msg(format!("shard {}: {e}", file.display())),
                },
            )?;
            total += infos
                .iter()
                .filter(|i| keep(&i.name))
                .filter(|i| is_float(i.dtype))
                .map(|i| i.layout.shape().elem_count() as u64)
                .sum::<u64>();
        }
        Ok(total)
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
    let bytes_on_disk = file.stamp().map_or(0, |(bytes, _)| bytes);
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
        unsafe { VarBuilder::from_mmaped_safetensors(&file.files, DType::F32, device) }
    } else if let [single] = file.files.as_slice() {
        VarBuilder::from_pth(single, DType::F32, device)
    } else {
        ShardedPth::open(&file.files)
            .map(|b| VarBuilder::from_backend(Box::new(b), DType::F32, device.clone()))
    }
    .map_err(corrupt)?;
    Ok(OpenedWeights {
        file,
        bytes_on_disk,
        parameters,
        vb,
    })
}

/// The shards of a `pytorch_model.bin` checkpoint as one weight source: each tensor is read
/// from the shard that holds it, when a layer asks for it (as candle's `from_pth` does for one
/// file).
struct ShardedPth {
    shards: Vec<candle_core::pickle::PthTensors>,
    /// Which shard holds each tensor.
    owner: std::collections::HashMap<String, usize>,
}

impl ShardedPth {
    /// Open every shard's pickle index; a tensor stored in two shards is refused (which copy a
    /// layer got would depend on the order the shards were read).
    fn open(files: &[PathBuf]) -> candle_core::Result<Self> {
        let mut shards = Vec::with_capacity(files.len());
        let mut owner = std::collections::HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let pth = candle_core::pickle::PthTensors::new(f, None)?;
            for name in pth.tensor_infos().keys() {
                if let Some(j) = owner.insert(name.clone(), i) {
                    candle_core::bail!(
                        "tensor {name} is in two shards ({} and {})",
                        files[j].display(),
                        f.display()
                    );
                }
            }
            shards.push(pth);
        }
        Ok(ShardedPth { shards, owner })
    }

    fn shard(&self, name: &str) -> candle_core::Result<&candle_core::pickle::PthTensors> {
        match self.owner.get(name) {
            Some(&i) => Ok(&self.shards[i]),
            None => Err(candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()),
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for ShardedPth {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        candle_nn::var_builder::SimpleBackend::get(self.shard(name)?, s, name, h, dtype, dev)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        candle_nn::var_builder::SimpleBackend::get_unchecked(self.shard(name)?, name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.owner.contains_key(name)
    }
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

#[cfg(test)]
mod sharded_tests {
    use super::*;

    fn index(dir: &Path, map: serde_json::Value) -> PathBuf {
        let p = dir.join("model.safetensors.index.json");
        std::fs::write(&p, serde_json::json!({ "weight_map": map }).to_string()).unwrap();
        p
    }

    #[test]
    fn an_index_names_its_shards_once_each_and_every_one_must_be_there() {
        let tmp = tempfile::tempdir().unwrap();
        let p = index(
            tmp.path(),
            serde_json::json!({"a": "m-2.safetensors", "b": "m-1.safetensors", "c": "m-2.safetensors"}),
        );
        let err = shards_of_index(&p).unwrap_err().to_string();
        assert!(
            err.contains("2 of its 2 shards are missing (m-1.safetensors, m-2.safetensors)"),
            "{err}"
        );
        std::fs::write(tmp.path().join("m-1.safetensors"), b"").unwrap();
        std::fs::write(tmp.path().join("m-2.safetensors"), b"").unwrap();
        let got = shards_of_index(&p).unwrap();
        assert_eq!(
            got,
            vec![
                tmp.path().join("m-1.safetensors"),
                tmp.path().join("m-2.safetensors")
            ]
        );
        let w = find_weights(tmp.path()).unwrap();
        assert_eq!((w.files.len(), w.path, w.is_safetensors), (2, p, true));
    }

    #[test]
    fn an_index_that_points_outside_its_folder_or_names_nothing_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = index(
            tmp.path(),
            serde_json::json!({"a": "../elsewhere.safetensors"}),
        );
        let err = shards_of_index(&p).unwrap_err().to_string();
        assert!(err.contains("is not a file beside the index"), "{err}");
        let p = index(tmp.path(), serde_json::json!({}));
        let err = shards_of_index(&p).unwrap_err().to_string();
        assert!(err.contains("names no files"), "{err}");
        std::fs::write(&p, "{}").unwrap();
        let err = shards_of_index(&p).unwrap_err().to_string();
        assert!(err.contains("no weight_map"), "{err}");
        // A .bin index is read the same way.
        let bin = tempfile::tempdir().unwrap();
        std::fs::write(bin.path().join("pytorch_model.bin.index.json"), "{}").unwrap();
        let err = find_weights(bin.path()).unwrap_err().to_string();
        assert!(
            err.contains("pytorch_model.bin.index.json: no weight_map"),
            "{err}"
        );
    }

    fn sharded_fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/distilbert-mnli-tiny-sharded")
    }

    #[test]
    fn a_sharded_pytorch_bin_reads_every_tensor_from_its_shard() {
        let dir = sharded_fixture();
        let w = find_weights(&dir).unwrap();
        assert_eq!((w.files.len(), w.is_safetensors), (3, false));
        let sharded = open_weights(&dir, &Device::Cpu).unwrap();
        let whole =
            open_weights(&dir.with_file_name("distilbert-mnli-tiny"), &Device::Cpu).unwrap();
        assert_eq!(sharded.parameters, whole.parameters);
        let index: serde_json::Value =
            read_json(&dir.join("pytorch_model.bin.index.json")).unwrap();
        let names: Vec<&String> = index["weight_map"].as_object().unwrap().keys().collect();
        assert!(names.len() > 10);
        for name in names {
            assert!(sharded.vb.contains_tensor(name), "{name}");
            let a = sharded.vb.get_unchecked(name).unwrap();
            let b = whole.vb.get_unchecked(name).unwrap();
            let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
            assert_eq!(
                diff.max(0).unwrap().to_scalar::<f32>().unwrap(),
                0.0,
                "{name}"
            );
        }
        assert!(!sharded.vb.contains_tensor("no.such.tensor"));
        assert!(sharded.vb.get_unchecked("no.such.tensor").is_err());
    }

    #[test]
    fn a_tensor_in_two_shards_or_a_corrupt_shard_is_refused() {
        let src = sharded_fixture();
        let tmp = tempfile::tempdir().unwrap();
        let first = src.join("pytorch_model-00001-of-00003.bin");
        std::fs::copy(&first, tmp.path().join("a.bin")).unwrap();
        std::fs::copy(&first, tmp.path().join("b.bin")).unwrap();
        let map = serde_json::json!({"weight_map": {"x": "a.bin", "y": "b.bin"}});
        let index = tmp.path().join("pytorch_model.bin.index.json");
        std::fs::write(&index, map.to_string()).unwrap();
        let err = format!(
            "{:#}",
            open_weights(tmp.path(), &Device::Cpu).err().unwrap()
        );
        assert!(err.contains("is in two shards"), "{err}");
        // A truncated shard: the message says which file and what to do.
        let bytes = std::fs::read(&first).unwrap();
        std::fs::write(tmp.path().join("b.bin"), &bytes[..bytes.len() / 2]).unwrap();
        std::fs::remove_file(tmp.path().join("a.bin")).unwrap();
        let map = serde_json::json!({"weight_map": {"y": "b.bin"}});
        std::fs::write(&index, map.to_string()).unwrap();
        let err = format!(
            "{:#}",
            open_weights(tmp.path(), &Device::Cpu).err().unwrap()
        );
        assert!(err.contains("truncated or corrupt"), "{err}");
        assert!(err.contains("download it again"), "{err}");
    }
}
