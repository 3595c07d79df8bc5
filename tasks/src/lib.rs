//! Task plugins for distill-harness.
//!
//! A task knows its data and its official metric, never a model's internals. Every task is
//! declared once in [`registry::REGISTRY`], a static list: there is no file scanning at start-up
//! and a test rejects duplicate names. Each task carries a version that is recorded in every
//! result, so a change to how a task reads data or scores is visible in the results file.
//!
//! The flow for one task is: [`Task::load`] a split into a [`Dataset`] of [`Example`]s, let a
//! backend turn each example into an [`Prediction`], then [`Task::score`] the predictions
//! against the gold labels with the task's official metric.

pub mod choice;
pub mod data;
pub mod generation;
pub mod glue;
pub mod metrics;
pub mod numeric;
pub mod probe_fit;
pub mod registry;
pub mod request;

pub use data::{DataError, Dataset, Example, Gold};
pub use registry::{find_any_task, find_task, task_names, AnyTask, REGISTRY};

use std::collections::BTreeMap;

/// Named metric values, as fractions (0-1) or correlations (-1..1).
pub type Metrics = BTreeMap<String, f64>;

/// What a task needs a model to produce for each example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// Pick one of the task's labels.
    Classification,
    /// Predict a real-valued score (STS-B).
    Regression,
}

/// A model's answer for one example.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Prediction {
    /// Index into the task's labels, with the probability of each task label.
    Class { label: usize, probs: Vec<f64> },
    /// A real-valued score (regression head or cosine similarity).
    Score { value: f64 },
}

/// Where a task's data comes from.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// A folder in the original GLUE layout (`SST-2/dev.tsv`, `CoLA/dev.tsv`, ...).
    GlueDir(std::path::PathBuf),
    /// Rows already read from elsewhere (the Hub's parquet files), one map of column name to
    /// value per row, keyed by split name (`validation`, `train`, ...).
    Records(BTreeMap<String, Vec<BTreeMap<String, serde_json::Value>>>),
}

/// A dataset on the Hugging Face Hub in the parquet layout `datasets` writes: one folder per
/// config, one `SPLIT-00000-of-00001.parquet` file per split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubDataset {
    pub repo: &'static str,
    pub config: &'static str,
}

impl HubDataset {
    /// The parquet file of one split inside the repository.
    pub fn parquet_file(&self, split: &str) -> String {
        parquet_file(self.config, split)
    }
}

/// The parquet file of a split inside a config folder of a Hub dataset.
pub fn parquet_file(config: &str, split: &str) -> String {
    format!("{config}/{split}-00000-of-00001.parquet")
}

/// One evaluation split of a task (MNLI has two: matched and mismatched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalSplit {
    /// Suffix used in metric names (`accuracy_matched`), empty for single-split tasks.
    pub suffix: &'static str,
    /// File name inside the task's GLUE folder.
    pub glue_file: &'static str,
    /// Split name in the Hub dataset `nyu-mll/glue`.
    pub hub_split: &'static str,
}

/// A task plugin. Implementations are plain data plus scoring; see [`glue::GlueTask`].
pub trait Task: Sync + Send {
    /// Registry name, as typed on the command line (`sst2`).
    fn name(&self) -> &'static str;
    /// Bumped whenever data reading or scoring changes in a way that changes numbers.
    fn version(&self) -> u32;
    /// One-line description for `harness list tasks`.
    fn description(&self) -> &'static str;
    fn kind(&self) -> TaskKind;
    /// Label names in the order of the Hub dataset `nyu-mll/glue` (empty for regression).
    fn labels(&self) -> &'static [&'static str];
    /// Whether each example is a pair of texts.
    fn is_pair(&self) -> bool;
    /// The metric that retention and the macro score use.
    fn primary_metric(&self) -> &'static str;
    /// The splits that are scored.
    fn eval_splits(&self) -> &'static [EvalSplit];
    /// The split a probe is trained on, when the task has one.
    fn train_split(&self) -> Option<EvalSplit>;
    /// Where the task's data lives on the Hugging Face Hub, when it does.
    fn hub_dataset(&self) -> Option<HubDataset> {
        None
    }
    /// Load one split. Errors name the file and line.
    fn load(&self, source: &DataSource, split: &EvalSplit) -> Result<Dataset, DataError>;
    /// Score predictions of one split against its gold labels with the official metric.
    fn score(&self, predictions: &[Prediction], gold: &[Gold], suffix: &str) -> Metrics;
}
