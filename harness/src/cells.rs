//! The cell files every run loop shares: teacher and student roles, a finished cell as saved
//! on disk, its path, the cache key of a checkpoint reference, and reading a cached file back
//! only when its key matches today's settings.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use reports::{Cell, CheckpointInfo};
use serde::{Deserialize, Serialize};
use tasks::Prediction;

use crate::models::resolve::ModelRef;

/// Teacher or student.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Teacher,
    Student,
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Teacher => "teacher",
            Role::Student => "student",
        }
    }
}

/// A finished cell as saved on disk: its summary and every prediction, per evaluation split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellFile {
    pub cell: Cell,
    pub predictions: Vec<Vec<Prediction>>,
}

/// A stable description of a checkpoint reference, for cache keys. Local folders include the
/// weight file's size and modification time, so replaced weights are recomputed.
pub fn checkpoint_key(r: &ModelRef) -> String {
    match r {
        ModelRef::Local(dir) => {
            let stamp = weights_stamp(dir)
                .map(|(bytes, mtime)| format!("{bytes}b@{mtime}"))
                .unwrap_or_default();
            format!("{}#{stamp}", crate::models::canonical(dir))
        }
        ModelRef::Hub {
            repo,
            revision,
            file,
        } => {
            let file = file.as_deref().map_or(String::new(), |f| format!(":{f}"));
            format!("{repo}@{}{file}", revision.as_deref().unwrap_or("main"))
        }
        ModelRef::Alias(a) => a.clone(),
        ModelRef::Mock(spec) => format!("mock:{spec}"),
    }
}

/// Bytes and newest modification time of a local checkpoint's weights (a `.gguf`, the
/// folder's safetensors file or shards, or its PyTorch file), when it has any.
pub fn weights_stamp(dir: &Path) -> Option<(u64, u64)> {
    let files = match crate::models::decoder::gguf_path(dir) {
        Ok(Some(gguf)) => vec![gguf],
        _ => crate::models::find_weights(dir).ok()?.files,
    };
    crate::models::checkpoint::files_stamp(&files)
}

/// `OUT/cells/<task>.<what>.json`: a role's cell (`teacher`, `student`) or a pair's file.
pub fn cell_path(out: &Path, task: &str, what: &str) -> PathBuf {
    out.join("cells").join(format!("{task}.{what}.json"))
}

/// A cached file whose cache key (read by `key_of`) is `key`; `None` when absent, unreadable
/// or computed with other settings.
pub fn read_cached<T: for<'de> Deserialize<'de>>(
    path: &Path,
    key: &str,
    key_of: fn(&T) -> &str,
) -> Option<T> {
    let Ok(text) = std::fs::read_to_string(path) else {
        tracing::debug!(path = %path.display(), "no cached cell");
        return None;
    };
    let Ok(v) = serde_json::from_str::<T>(&text) else {
        tracing::debug!(path = %path.display(), "cached cell unreadable; recomputing");
        return None;
    };
    let hit = key_of(&v) == key;
    tracing::debug!(path = %path.display(), hit, cache_key = key, "cached cell");
    hit.then_some(v)
}

/// The progress line for a loaded model.
pub fn loaded_line(info: &CheckpointInfo, seconds: f64) -> String {
    format!(
        "loaded {} ({}, {:.1}M parameters{}) in {seconds:.1} s",
        info.id,
        info.architecture,
        info.parameters as f64 / 1e6,
        info.quantization
            .as_deref()
            .map_or(String::new(), |q| format!(", {q}")),
    )
}

/// `OUT/predictions/<task>.jsonl`, one JSON object a line, written atomically.
pub fn write_predictions_file(
    out: &Path,
    task: &str,
    lines: impl Iterator<Item = serde_json::Value>,
) -> Result<()> {
    let dir = out.join("predictions");
    std::fs::create_dir_all(&dir)?;
    let mut text = String::new();
    for line in lines {
        text.push_str(&line.to_string());
        text.push('\n');
    }
    reports::io::write_atomic(&dir.join(format!("{task}.jsonl")), text.as_bytes())
        .with_context(|| format!("cannot write predictions in {}", dir.display()))
}
