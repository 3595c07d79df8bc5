//! `results.json`: one file per run, scores as fractions (0-1), times in SI units with the unit
//! in the key. Bump [`SCHEMA_VERSION`] on any change that a reader of an older file would
//! misread, and keep `reports/results.schema.json` in step (a test checks they agree).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the layout below.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole results file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    pub schema_version: u32,
    pub harness_version: String,
    /// The harness's git commit when it was built from a checkout.
    pub git_commit: Option<String>,
    pub created_unix_s: u64,
    pub settings: RunSettings,
    pub teacher: ModelSummary,
    pub student: ModelSummary,
    pub tasks: BTreeMap<String, TaskResult>,
    /// Tasks that could not be scored, with the reason.
    pub skipped: BTreeMap<String, String>,
    /// Mean of each model's primary metrics over the tasks run; absent until a task finishes.
    pub macro_score: Option<MacroScore>,
}

/// Settings that change numbers. Batch size is recorded but does not change metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunSettings {
    pub batch_size: usize,
    /// Truncation length in tokens; `None` means each model's own maximum.
    pub max_length: Option<usize>,
    pub device: String,
    pub dtype: String,
    /// Where task data came from: a folder, or `hub:nyu-mll/glue`.
    pub data_source: String,
    pub probe_train_rows: usize,
    pub probe_seed: u64,
    pub probe_l2: f64,
    pub probe_iterations: usize,
}

/// A model as the user named it, with what it resolved to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelSummary {
    /// As given: alias, Hub id or path.
    pub id: String,
    /// `alias`, `hub` or `local`.
    pub source: String,
    /// The checkpoint of the first task run (aliases use one checkpoint per task; each cell
    /// records its own).
    pub checkpoint: Option<CheckpointInfo>,
}

/// One loaded checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointInfo {
    /// Hub id or local path.
    pub id: String,
    /// Resolved Hub revision (commit) or canonical local path.
    pub resolved: String,
    /// `bert`, `distilbert`, `mpnet`.
    pub architecture: String,
    /// Floating-point parameters counted from the weight file.
    pub parameters: u64,
    /// Weight file bytes.
    pub bytes_on_disk: u64,
    /// Label names of the classification head, if any.
    pub head_labels: Option<Vec<String>>,
}

/// How a model was scored on a task.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The checkpoint's own task head.
    Head,
    /// Cosine similarity of pooled sentence embeddings (STS-B with an encoder).
    Cosine,
    /// Logistic regression fitted on frozen pooled embeddings of the train split.
    Probe,
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Head => "head",
            Mode::Cosine => "cosine",
            Mode::Probe => "probe",
        }
    }
}

/// One model on one task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    pub checkpoint: CheckpointInfo,
    pub mode: Mode,
    pub metrics: BTreeMap<String, f64>,
    /// Examples whose token count exceeded the maximum length and were cut.
    pub n_truncated: usize,
    /// Probe details, when `mode` is `probe`.
    pub probe: Option<ProbeInfo>,
    /// Wall time of the cell (load excluded), seconds.
    pub elapsed_s: f64,
    /// Everything that determines this cell's numbers; a rerun with the same key is skipped.
    pub cache_key: String,
}

/// How a probe was fitted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeInfo {
    pub train_origin: String,
    pub train_rows: usize,
    pub features: String,
}

/// Teacher and student on one task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskResult {
    pub task_version: u32,
    pub primary_metric: String,
    /// The scoring mode, or `mixed` when teacher and student differ (each cell has its own).
    pub mode: String,
    pub n_examples: usize,
    pub teacher: Cell,
    pub student: Cell,
    /// Student over teacher on the primary metric; `None` when the teacher's is not positive.
    pub retention: Option<f64>,
}

/// Macro average of primary metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MacroScore {
    pub tasks: Vec<String>,
    pub teacher: f64,
    pub student: f64,
    pub retention: Option<f64>,
}

/// Student over teacher, defined only for a positive teacher score.
pub fn retention(teacher: f64, student: f64) -> Option<f64> {
    (teacher > 0.0 && teacher.is_finite() && student.is_finite()).then(|| student / teacher)
}

impl TaskResult {
    pub fn new(
        task_version: u32,
        primary_metric: &str,
        n_examples: usize,
        teacher: Cell,
        student: Cell,
    ) -> Self {
        let mode = if teacher.mode == student.mode {
            teacher.mode.as_str().to_string()
        } else {
            "mixed".to_string()
        };
        let t = teacher
            .metrics
            .get(primary_metric)
            .copied()
            .unwrap_or(f64::NAN);
        let s = student
            .metrics
            .get(primary_metric)
            .copied()
            .unwrap_or(f64::NAN);
        TaskResult {
            task_version,
            primary_metric: primary_metric.to_string(),
            mode,
            n_examples,
            retention: retention(t, s),
            teacher,
            student,
        }
    }

    pub fn primary(&self) -> (f64, f64) {
        let get = |c: &Cell| {
            c.metrics
                .get(&self.primary_metric)
                .copied()
                .unwrap_or(f64::NAN)
        };
        (get(&self.teacher), get(&self.student))
    }
}

impl Results {
    /// Recompute the macro score from the task results.
    pub fn update_macro(&mut self) {
        if self.tasks.is_empty() {
            self.macro_score = None;
            return;
        }
        let n = self.tasks.len() as f64;
        let (mut t, mut s) = (0.0, 0.0);
        for r in self.tasks.values() {
            let (a, b) = r.primary();
            t += a / n;
            s += b / n;
        }
        self.macro_score = Some(MacroScore {
            tasks: self.tasks.keys().cloned().collect(),
            teacher: t,
            student: s,
            retention: retention(t, s),
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn cell(mode: Mode, metric: &str, value: f64) -> Cell {
        Cell {
            checkpoint: CheckpointInfo {
                id: "m".into(),
                resolved: "/m".into(),
                architecture: "bert".into(),
                parameters: 10,
                bytes_on_disk: 40,
                head_labels: None,
            },
            mode,
            metrics: [(metric.to_string(), value)].into_iter().collect(),
            n_truncated: 0,
            probe: None,
            elapsed_s: 1.0,
            cache_key: "k".into(),
        }
    }

    pub fn sample() -> Results {
        let mut r = Results {
            schema_version: SCHEMA_VERSION,
            harness_version: "0.1.0".into(),
            git_commit: Some("abc123".into()),
            created_unix_s: 1_800_000_000,
            settings: RunSettings {
                batch_size: 32,
                max_length: None,
                device: "cpu".into(),
                dtype: "f32".into(),
                data_source: "../shared/data/glue".into(),
                probe_train_rows: 2000,
                probe_seed: 42,
                probe_l2: 1e-3,
                probe_iterations: 300,
            },
            teacher: ModelSummary {
                id: "teacher".into(),
                source: "local".into(),
                checkpoint: None,
            },
            student: ModelSummary {
                id: "student".into(),
                source: "local".into(),
                checkpoint: None,
            },
            tasks: BTreeMap::new(),
            skipped: [("mrpc".to_string(), "student: no train split".to_string())]
                .into_iter()
                .collect(),
            macro_score: None,
        };
        r.tasks.insert(
            "stsb".into(),
            TaskResult::new(
                1,
                "spearman",
                1500,
                cell(Mode::Cosine, "spearman", 0.8),
                cell(Mode::Cosine, "spearman", 0.76),
            ),
        );
        r.tasks.insert(
            "sst2".into(),
            TaskResult::new(
                1,
                "accuracy",
                872,
                cell(Mode::Probe, "accuracy", 0.8),
                cell(Mode::Head, "accuracy", 0.6),
            ),
        );
        r.update_macro();
        r
    }

    #[test]
    fn retention_and_macro_by_hand() {
        let r = sample();
        assert!((r.tasks["stsb"].retention.unwrap() - 0.95).abs() < 1e-12);
        assert_eq!(r.tasks["sst2"].mode, "mixed");
        assert_eq!(r.tasks["stsb"].mode, "cosine");
        let m = r.macro_score.as_ref().unwrap();
        assert!((m.teacher - 0.8).abs() < 1e-12);
        assert!((m.student - 0.68).abs() < 1e-12);
        assert!((m.retention.unwrap() - 0.85).abs() < 1e-12);
    }

    #[test]
    fn retention_undefined_for_non_positive_teacher() {
        assert_eq!(retention(0.0, 0.5), None);
        assert_eq!(retention(-0.1, 0.5), None);
        assert_eq!(retention(0.5, 0.25), Some(0.5));
    }

    #[test]
    fn round_trips_through_json() {
        let r = sample();
        let text = serde_json::to_string(&r).unwrap();
        let back: Results = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }
}
