//! The distill-harness results file and its writers.
//!
//! [`schema`] holds the serde types of `results.json` (versioned by [`schema::SCHEMA_VERSION`]
//! and described by the JSON Schema `reports/results.schema.json`); [`io`] writes files
//! atomically; [`export`] renders results for people (Markdown for now).

pub mod compare;
pub mod export;
pub mod io;
pub mod schema;
pub mod schema_check;
pub mod stats;

pub use schema::*;
