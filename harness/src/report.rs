//! Reading results files and writing every report format beside them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use reports::Results;

/// Read a results file, with clear errors for a missing, unreadable or foreign file.
pub fn read_results(path: &Path) -> Result<Results> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read results file", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let version = value.get("schema_version").and_then(|v| v.as_u64());
    let readable = reports::schema::READABLE_SCHEMA_VERSIONS;
    if !version.is_some_and(|v| readable.iter().any(|&r| u64::from(r) == v)) {
        let names: Vec<String> = readable.iter().map(u32::to_string).collect();
        bail!(
            "{}: schema version {} is not one this harness reads ({})",
            path.display(),
            version.map_or("missing".to_string(), |v| v.to_string()),
            names.join(", ")
        );
    }
    serde_json::from_value(value)
        .with_context(|| format!("{}: not a distill-harness results file", path.display()))
}

/// Write the named formats into `out`, atomically; returns the paths written.
pub fn write_reports(results: &Results, out: &Path, formats: &[&str]) -> Result<Vec<PathBuf>> {
    let mut exporters = Vec::new();
    for f in formats {
        let (exporter, file) = reports::export::by_name(f)
            .with_context(|| format!("unknown report format '{f}' (md, html, csv, json)"))?;
        exporters.push((exporter, file));
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut written = Vec::new();
    for (exporter, file) in exporters {
        let path = out.join(file);
        reports::io::write_atomic(&path, exporter.render(results).as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
