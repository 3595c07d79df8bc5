//! The nine GLUE tasks, each declared once as a [`GlueTask`] value.
//!
//! Column layouts follow the files written by the original `download_glue_data.py`
//! (as in `../shared/data/glue/`); Hub column names follow the dataset `nyu-mll/glue`.
//! Label orders are the Hub dataset's `ClassLabel` orders; the TSV files use the same integer
//! codes, or label names (MNLI, QNLI, RTE), which are mapped by name.

use std::collections::BTreeMap;

use crate::data::{field, Column, DataError, Dataset, Example, Gold, TsvFile};
use crate::metrics;
use crate::{DataSource, EvalSplit, Metrics, Prediction, Task, TaskKind};

/// Which official metric set a task reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricSet {
    Accuracy,
    /// F1 of the positive class and accuracy (MRPC, QQP).
    F1Accuracy,
    /// Matthews correlation (CoLA), with accuracy alongside.
    Matthews,
    /// Pearson and Spearman correlation (STS-B).
    Correlation,
}

/// Where the fields of one example live, in the TSV file and in the Hub's parquet rows.
#[derive(Debug, Clone, Copy)]
pub struct Columns {
    pub text_a: Column,
    pub text_b: Option<Column>,
    pub label: Column,
    pub id: Option<Column>,
    pub hub_text_a: &'static str,
    pub hub_text_b: Option<&'static str>,
}

/// A GLUE task: data layout, labels and metric.
#[derive(Debug)]
pub struct GlueTask {
    pub name: &'static str,
    pub version: u32,
    pub description: &'static str,
    /// Folder inside `--data-dir` (`SST-2`).
    pub dir: &'static str,
    /// Config name in `nyu-mll/glue` (`sst2`).
    pub hub_config: &'static str,
    pub has_header: bool,
    pub columns: Columns,
    pub labels: &'static [&'static str],
    pub metric_set: MetricSet,
    pub primary: &'static str,
    pub splits: &'static [EvalSplit],
    pub train: Option<EvalSplit>,
}

/// The Hub dataset all GLUE tasks are configs of.
pub const HUB_REPO: &str = "nyu-mll/glue";

const DEV: &[EvalSplit] = &[EvalSplit {
    suffix: "",
    glue_file: "dev.tsv",
    hub_split: "validation",
}];
const TRAIN: Option<EvalSplit> = Some(EvalSplit {
    suffix: "",
    glue_file: "train.tsv",
    hub_split: "train",
});

pub static COLA: GlueTask = GlueTask {
    name: "cola",
    version: 1,
    description: "CoLA: grammatical acceptability; Matthews correlation",
    dir: "CoLA",
    hub_config: "cola",
    has_header: false,
    columns: Columns {
        text_a: Column::Index(3),
        text_b: None,
        label: Column::Index(1),
        id: None,
        hub_text_a: "sentence",
        hub_text_b: None,
    },
    labels: &["unacceptable", "acceptable"],
    metric_set: MetricSet::Matthews,
    primary: "mcc",
    splits: DEV,
    train: TRAIN,
};

pub static SST2: GlueTask = GlueTask {
    name: "sst2",
    version: 1,
    description: "SST-2: binary sentiment; accuracy",
    dir: "SST-2",
    hub_config: "sst2",
    has_header: true,
    columns: Columns {
        text_a: Column::Name("sentence"),
        text_b: None,
        label: Column::Name("label"),
        id: None,
        hub_text_a: "sentence",
        hub_text_b: None,
    },
    labels: &["negative", "positive"],
    metric_set: MetricSet::Accuracy,
    primary: "accuracy",
    splits: DEV,
    train: TRAIN,
};

pub static MRPC: GlueTask = GlueTask {
    name: "mrpc",
    version: 1,
    description: "MRPC: paraphrase detection; F1 and accuracy",
    dir: "MRPC",
    hub_config: "mrpc",
    has_header: true,
    columns: Columns {
        text_a: Column::Name("#1 String"),
        text_b: Some(Column::Name("#2 String")),
        label: Column::Name("Quality"),
        id: None,
        hub_text_a: "sentence1",
        hub_text_b: Some("sentence2"),
    },
    labels: &["not_equivalent", "equivalent"],
    metric_set: MetricSet::F1Accuracy,
    primary: "f1",
    splits: DEV,
    train: TRAIN,
};

pub static STSB: GlueTask = GlueTask {
    name: "stsb",
    version: 1,
    description: "STS-B: semantic similarity 0-5; Pearson and Spearman",
    dir: "STS-B",
    hub_config: "stsb",
    has_header: true,
    columns: Columns {
        text_a: Column::Name("sentence1"),
        text_b: Some(Column::Name("sentence2")),
        label: Column::Name("score"),
        id: Some(Column::Name("index")),
        hub_text_a: "sentence1",
        hub_text_b: Some("sentence2"),
    },
    labels: &[],
    metric_set: MetricSet::Correlation,
    primary: "spearman",
    splits: DEV,
    train: TRAIN,
};

pub static QQP: GlueTask = GlueTask {
    name: "qqp",
    version: 1,
    description: "QQP: duplicate questions; F1 and accuracy",
    dir: "QQP",
    hub_config: "qqp",
    has_header: true,
    columns: Columns {
        text_a: Column::Name("question1"),
        text_b: Some(Column::Name("question2")),
        label: Column::Name("is_duplicate"),
        id: Some(Column::Name("id")),
        hub_text_a: "question1",
        hub_text_b: Some("question2"),
    },
    labels: &["not_duplicate", "duplicate"],
    metric_set: MetricSet::F1Accuracy,
    primary: "f1",
    splits: DEV,
    train: TRAIN,
};

pub static MNLI: GlueTask = GlueTask {
    name: "mnli",
    version: 1,
    description: "MNLI: entailment, 3 classes; matched and mismatched accuracy",
    dir: "MNLI",
    hub_config: "mnli",
    has_header: true,
    columns: Columns {
        text_a: Column::Name("sentence1"),
        text_b: Some(Column::Name("sentence2")),
        label: Column::Name("gold_label"),
        id: Some(Column::Name("pairID")),
        hub_text_a: "premise",
        hub_text_b: Some("hypothesis"),
    },
    labels: &["entailment", "neutral", "contradiction"],
    metric_set: MetricSet::Accuracy,
    primary: "accuracy_matched",
    splits: &[
        EvalSplit {
            suffix: "_matched",
            glue_file: "dev_matched.tsv",
            hub_split: "validation_matched",
        },
        EvalSplit {
            suffix: "_mismatched",
            glue_file: "dev_mismatched.tsv",
            hub_split: "validation_mismatched",
        },
    ],
    train: TRAIN,
};

pub static QNLI: GlueTask = GlueTask {
    name: "qnli",
    version: 1,
    description: "QNLI: question-answer entailment; accuracy",
    dir: "QNLI",
    hub_config: "qnli",
    has_header: true,
    columns: Columns {
        text_a: Column::Name("question"),
        text_b: Some(Column::Name("sentence")),
        label: Column::Name("label"),
        id: Some(Column::Name("index")),
        hub_text_a: "question",
        hub_text_b: Some("sentence"),
    },
    labels: &["entailment", "not_entailment"],
    metric_set: MetricSet::Accuracy,
    primary: "accuracy",
    splits: DEV,
    train: TRAIN,
};

pub static RTE: GlueTask = GlueTask {
    name: "rte",
    version: 1,
    description: "RTE: textual entailment; accuracy",
    dir: "RTE",
    hub_config: "rte",
    has_header: true,
    columns: Columns {
        text_a: Column::Name("sentence1"),
        text_b: Some(Column::Name("sentence2")),
        label: Column::Name("label"),
        id: Some(Column::Name("index")),
        hub_text_a: "sentence1",
        hub_text_b: Some("sentence2"),
    },
    labels: &["entailment", "not_entailment"],
    metric_set: MetricSet::Accuracy,
    primary: "accuracy",
    splits: DEV,
    train: TRAIN,
};

pub static WNLI: GlueTask = GlueTask {
    name: "wnli",
    version: 1,
    description: "WNLI: Winograd entailment; accuracy",
    dir: "WNLI",
    hub_config: "wnli",
    has_header: true,
    columns: Columns {
        text_a: Column::Name("sentence1"),
        text_b: Some(Column::Name("sentence2")),
        label: Column::Name("label"),
        id: Some(Column::Name("index")),
        hub_text_a: "sentence1",
        hub_text_b: Some("sentence2"),
    },
    labels: &["not_entailment", "entailment"],
    metric_set: MetricSet::Accuracy,
    primary: "accuracy",
    splits: DEV,
    train: TRAIN,
};

impl GlueTask {
    /// Parse a gold label: an integer code, a label name, or (STS-B) a float score.
    fn parse_label(&self, raw: &str) -> Result<Gold, String> {
        let raw = raw.trim();
        if self.metric_set == MetricSet::Correlation {
            return match raw.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Gold::Score(v)),
                _ => Err(format!("score '{raw}' is not a number")),
            };
        }
        if let Ok(i) = raw.parse::<usize>() {
            if i < self.labels.len() {
                return Ok(Gold::Class(i));
            }
        }
        self.labels
            .iter()
            .position(|l| *l == raw)
            .map(Gold::Class)
            .ok_or_else(|| {
                format!(
                    "label '{raw}' is not one of this task's labels ({}, or their indices 0-{})",
                    self.labels.join(", "),
                    self.labels.len() - 1
                )
            })
    }

    fn load_tsv(&self, dir: &std::path::Path, split: &EvalSplit) -> Result<Dataset, DataError> {
        let path = dir.join(self.dir).join(split.glue_file);
        let file = TsvFile::read(&path, self.has_header)?;
        let c = &self.columns;
        let ia = file.column_index(c.text_a)?;
        let ib = c.text_b.map(|col| file.column_index(col)).transpose()?;
        let il = file.column_index(c.label)?;
        let iid = c.id.map(|col| file.column_index(col)).transpose()?;
        let mut examples = Vec::with_capacity(file.rows.len());
        for (row_idx, (line, row)) in file.rows.iter().enumerate() {
            let text_a = field(&file.origin, *line, row, ia)?.to_string();
            let text_b = ib
                .map(|i| field(&file.origin, *line, row, i).map(str::to_string))
                .transpose()?;
            let gold = self
                .parse_label(field(&file.origin, *line, row, il)?)
                .map_err(|message| DataError::Malformed {
                    origin: file.origin.clone(),
                    line: *line,
                    message,
                })?;
            let id = match iid {
                Some(i) => field(&file.origin, *line, row, i)?.to_string(),
                None => row_idx.to_string(),
            };
            examples.push(Example {
                id,
                text_a,
                text_b,
                gold,
            });
        }
        if examples.is_empty() {
            return Err(DataError::Empty {
                origin: file.origin,
            });
        }
        Ok(Dataset {
            examples,
            origin: path.display().to_string(),
        })
    }

    fn load_records(
        &self,
        splits: &BTreeMap<String, Vec<BTreeMap<String, serde_json::Value>>>,
        split: &EvalSplit,
    ) -> Result<Dataset, DataError> {
        let origin = format!("{HUB_REPO}/{}/{}", self.hub_config, split.hub_split);
        let rows = splits
            .get(split.hub_split)
            .ok_or_else(|| DataError::Other(format!("{origin}: split not downloaded")))?;
        let text = |row: &BTreeMap<String, serde_json::Value>, col: &str, i: usize| {
            row.get(col)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| DataError::Malformed {
                    origin: origin.clone(),
                    line: i + 1,
                    message: format!("column '{col}' missing or not text"),
                })
        };
        let mut examples = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let label = row.get("label").ok_or_else(|| DataError::Malformed {
                origin: origin.clone(),
                line: i + 1,
                message: "column 'label' missing".into(),
            })?;
            // The Hub's test splits carry label -1 (hidden); they are never scored.
            let gold =
                self.parse_label(&label.to_string())
                    .map_err(|message| DataError::Malformed {
                        origin: origin.clone(),
                        line: i + 1,
                        message,
                    })?;
            examples.push(Example {
                id: row
                    .get("idx")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| i.to_string()),
                text_a: text(row, self.columns.hub_text_a, i)?,
                text_b: self
                    .columns
                    .hub_text_b
                    .map(|c| text(row, c, i))
                    .transpose()?,
                gold,
            });
        }
        if examples.is_empty() {
            return Err(DataError::Empty { origin });
        }
        Ok(Dataset { examples, origin })
    }
}

impl Task for GlueTask {
    fn name(&self) -> &'static str {
        self.name
    }
    fn hub_dataset(&self) -> Option<crate::HubDataset> {
        Some(crate::HubDataset {
            repo: HUB_REPO,
            config: self.hub_config,
        })
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn description(&self) -> &'static str {
        self.description
    }
    fn kind(&self) -> TaskKind {
        if self.metric_set == MetricSet::Correlation {
            TaskKind::Regression
        } else {
            TaskKind::Classification
        }
    }
    fn labels(&self) -> &'static [&'static str] {
        self.labels
    }
    fn is_pair(&self) -> bool {
        self.columns.text_b.is_some()
    }
    fn primary_metric(&self) -> &'static str {
        self.primary
    }
    fn eval_splits(&self) -> &'static [EvalSplit] {
        self.splits
    }
    fn train_split(&self) -> Option<EvalSplit> {
        self.train
    }
    fn load(&self, source: &DataSource, split: &EvalSplit) -> Result<Dataset, DataError> {
        match source {
            DataSource::GlueDir(dir) => self.load_tsv(dir, split),
            DataSource::Records(splits) => self.load_records(splits, split),
        }
    }

    fn score(&self, predictions: &[Prediction], gold: &[Gold], suffix: &str) -> Metrics {
        assert_eq!(predictions.len(), gold.len(), "one prediction per example");
        let mut out = Metrics::new();
        let mut put = |name: &str, v: f64| {
            out.insert(format!("{name}{suffix}"), v);
        };
        if self.metric_set == MetricSet::Correlation {
            let p: Vec<f64> = predictions
                .iter()
                .map(|p| match p {
                    Prediction::Score { value } => *value,
                    Prediction::Class { label, .. } => *label as f64,
                })
                .collect();
            let g: Vec<f64> = gold.iter().filter_map(Gold::score).collect();
            put("pearson", metrics::pearson(&p, &g));
            put("spearman", metrics::spearman(&p, &g));
            return out;
        }
        let p: Vec<usize> = predictions
            .iter()
            .map(|p| match p {
                Prediction::Class { label, .. } => *label,
                // A regression output on a classification task is rounded to the nearest label.
                Prediction::Score { value } => value.round().max(0.0) as usize,
            })
            .collect();
        let g: Vec<usize> = gold.iter().filter_map(Gold::class).collect();
        put("accuracy", metrics::accuracy(&p, &g));
        match self.metric_set {
            MetricSet::F1Accuracy => put("f1", metrics::f1_binary(&p, &g)),
            MetricSet::Matthews => put("mcc", metrics::matthews_corrcoef(&p, &g)),
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_mrpc_with_bom_crlf_and_stray_quotes() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "MRPC/dev.tsv",
            "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\tHe said \"hi.\tHe said hi.\r\n0\t3\t4\tA\tB\r\n",
        );
        let ds = MRPC
            .load(&DataSource::GlueDir(tmp.path().into()), &MRPC.splits[0])
            .unwrap();
        assert_eq!(ds.examples.len(), 2);
        assert_eq!(ds.examples[0].text_a, "He said \"hi.");
        assert_eq!(ds.examples[0].text_b.as_deref(), Some("He said hi."));
        assert_eq!(ds.examples[0].gold, Gold::Class(1));
        assert_eq!(ds.examples[1].gold, Gold::Class(0));
    }

    #[test]
    fn reads_cola_without_header() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "CoLA/dev.tsv",
            "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\ngj04\t0\t*\tThe more we study verbs.\n",
        );
        let ds = COLA
            .load(&DataSource::GlueDir(tmp.path().into()), &COLA.splits[0])
            .unwrap();
        assert_eq!(ds.examples.len(), 2, "first row is data, not a header");
        assert_eq!(ds.examples[1].gold, Gold::Class(0));
        assert_eq!(ds.examples[1].text_a, "The more we study verbs.");
    }

    #[test]
    fn mnli_labels_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let header = "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label";
        write(
            tmp.path(),
            "MNLI/dev_mismatched.tsv",
            &format!("{header}\n0\t1\t1n\tx\t\t\t\t\tA\tB\tneutral\tneutral\n1\t2\t2c\tx\t\t\t\t\tC\tD\tcontradiction\tcontradiction\n"),
        );
        let ds = MNLI
            .load(&DataSource::GlueDir(tmp.path().into()), &MNLI.splits[1])
            .unwrap();
        assert_eq!(ds.examples[0].gold, Gold::Class(1));
        assert_eq!(ds.examples[1].gold, Gold::Class(2));
        assert_eq!(ds.examples[1].id, "2c");
    }

    #[test]
    fn malformed_row_names_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "SST-2/dev.tsv",
            "sentence\tlabel\ngood\t1\nbad row without a label\n",
        );
        let err = SST2
            .load(&DataSource::GlueDir(tmp.path().into()), &SST2.splits[0])
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("SST-2/dev.tsv:3: expected at least 2 tab-separated fields, found 1"),
            "{err}"
        );
    }

    #[test]
    fn unknown_label_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "SST-2/dev.tsv", "sentence\tlabel\ngood\t7\n");
        let err = SST2
            .load(&DataSource::GlueDir(tmp.path().into()), &SST2.splits[0])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2: label '7' is not one of this task's labels"),
            "{err}"
        );
    }

    #[test]
    fn empty_file_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "SST-2/dev.tsv", "sentence\tlabel\n");
        let err = SST2
            .load(&DataSource::GlueDir(tmp.path().into()), &SST2.splits[0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("the data set is empty"), "{err}");
    }

    #[test]
    fn reads_hub_records() {
        let mut rows = BTreeMap::new();
        let row: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(r#"{"premise": "P", "hypothesis": "H", "label": 2, "idx": 5}"#)
                .unwrap();
        rows.insert("validation_matched".to_string(), vec![row]);
        let ds = MNLI
            .load(&DataSource::Records(rows), &MNLI.splits[0])
            .unwrap();
        assert_eq!(ds.examples[0].text_a, "P");
        assert_eq!(ds.examples[0].text_b.as_deref(), Some("H"));
        assert_eq!(ds.examples[0].gold, Gold::Class(2));
        assert_eq!(ds.examples[0].id, "5");
    }

    #[test]
    fn scores_use_official_metrics() {
        let preds: Vec<Prediction> = [1, 0, 1, 1]
            .iter()
            .map(|&l| Prediction::Class {
                label: l,
                probs: vec![],
            })
            .collect();
        let gold: Vec<Gold> = [1, 1, 1, 0].iter().map(|&g| Gold::Class(g)).collect();
        let m = MRPC.score(&preds, &gold, "");
        assert_eq!(m["accuracy"], 0.5);
        assert!((m["f1"] - 4.0 / 6.0).abs() < 1e-12);
        let m = MNLI.score(&preds, &gold, "_matched");
        assert_eq!(m["accuracy_matched"], 0.5);
        let m = COLA.score(&preds, &gold, "");
        assert!(m.contains_key("mcc"));
    }

    #[test]
    fn every_primary_metric_is_produced() {
        for task in crate::REGISTRY {
            let gold: Vec<Gold> = match task.kind() {
                TaskKind::Regression => vec![Gold::Score(1.0), Gold::Score(2.0)],
                TaskKind::Classification => vec![Gold::Class(0), Gold::Class(1)],
            };
            let preds = vec![Prediction::Score { value: 1.0 }; 2];
            let mut metrics = Metrics::new();
            for split in task.eval_splits() {
                metrics.extend(task.score(&preds, &gold, split.suffix));
            }
            assert!(
                metrics.contains_key(task.primary_metric()),
                "{} lacks {}",
                task.name(),
                task.primary_metric()
            );
        }
    }
}
