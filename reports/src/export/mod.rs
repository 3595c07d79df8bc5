//! Report formats, one file each behind the small [`Exporter`] trait (as hyperfine's
//! `src/export/`). `table` is the shared layout helper.

pub mod charts;
mod csv;
mod html;
mod json;
mod markdown;
pub mod svg;
pub mod table;
pub mod views;

pub use csv::CsvReport;
pub use html::{sweep_page, utc_date, HtmlReport};
pub use json::JsonReport;
pub use markdown::MarkdownReport;

/// The exporter for a format name (`md`, `html`, `csv`, `json`) and its file name.
pub fn by_name(name: &str) -> Option<(Box<dyn Exporter>, &'static str)> {
    match name {
        "md" | "markdown" => Some((Box::new(MarkdownReport), "report.md")),
        "html" => Some((Box::new(HtmlReport), "report.html")),
        "csv" => Some((Box::new(CsvReport), "results.csv")),
        "json" => Some((Box::new(JsonReport), "results.json")),
        _ => None,
    }
}

use crate::Results;

/// Renders a results file in one format.
pub trait Exporter {
    fn render(&self, results: &Results) -> String;
}

/// Format a fraction as points (x100) with two decimals, the way GLUE tables print scores.
pub fn points(v: f64) -> String {
    if v.is_finite() {
        format!("{:.2}", v * 100.0)
    } else {
        "n/a".into()
    }
}

/// Format an optional ratio as a percentage with one decimal.
pub fn percent(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{:.1}%", v * 100.0),
        _ => "n/a".into(),
    }
}
