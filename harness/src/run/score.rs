//! Scoring one encoder cell: a model's answers to a text task's requests (head logits, or
//! pooled embeddings for cosine similarity or a logistic-regression probe) turned into
//! predictions and the task's official metric.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use reports::{Cell, Mode, ProbeInfo};
use tasks::data::DataError;
use tasks::numeric::{argmax, softmax};
use tasks::probe_fit::{pair_features, sample_rows, LogisticProbe};
use tasks::{DataSource, Dataset, Prediction, TaskKind};

use crate::cells::CellFile;
use crate::hub_data;
use crate::labels::map_head_labels;
use crate::models::{Backend, Batched, TextInput};
use crate::plan::{PlannedTask, RunPlan};
use crate::profile::{self, RequestKind};

/// The train split of a task, or why there is none.
fn load_train(plan: &RunPlan, pt: &PlannedTask) -> Result<std::result::Result<Dataset, String>> {
    let task = pt.task;
    let Some(split) = task.train_split() else {
        return Ok(Err(format!(
            "{} has no train split to fit a probe on",
            task.name()
        )));
    };
    match &plan.data {
        DataSource::GlueDir(_) => match task.load(&plan.data, &split) {
            Ok(d) => Ok(Ok(d)),
            Err(DataError::MissingFile { path, .. }) => Ok(Err(format!(
                "the checkpoint has no {} head, and a probe needs the train split, which is not in --data-dir ({} is missing); add it or use a fine-tuned checkpoint",
                task.name(),
                path.display()
            ))),
            Err(e) => Err(e.into()),
        },
        DataSource::Records(_) => {
            let rows = hub_data::hub_split(task, split.hub_split)?;
            Ok(Ok(task.load(&DataSource::Records(rows), &split)?))
        }
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

pub(super) fn inputs(ds: &Dataset) -> Vec<TextInput<'_>> {
    ds.examples
        .iter()
        .map(|e| TextInput {
            a: &e.text_a,
            b: e.text_b.as_deref(),
        })
        .collect()
}

/// Each example's features from its embeddings (as [`profile::call`] asks for them: a pair's
/// two texts, `a` then `b`): the embedding, or SentEval pair features for pairs.
fn features(ds: &Dataset, emb: Batched) -> Vec<Vec<f32>> {
    let mut rows = emb.rows.into_iter();
    ds.examples
        .iter()
        .map(|e| {
            let u = rows.next().unwrap_or_default();
            match e.text_b {
                Some(_) => pair_features(&u, &rows.next().unwrap_or_default()),
                None => u,
            }
        })
        .collect()
}

/// Answers to a cell's dev splits: `(split index, kind)` to the model's outputs for that
/// split's examples at the run's batch size (from the profiler's throughput pass, or a
/// scoring pass of their own).
pub type DevOutputs<'a> = &'a dyn Fn(usize, RequestKind) -> Result<Batched>;

/// Score one model on one task, its dev splits answered by `dev`. `Ok(Err(reason))` means the
/// cell cannot be scored here (for example no head and no train split), decided before `dev`
/// is asked; real failures are errors.
pub fn score_cell(
    backend: &dyn Backend,
    pt: &PlannedTask,
    plan: &RunPlan,
    cache_key: String,
    dev: DevOutputs,
) -> Result<std::result::Result<CellFile, String>> {
    let task = pt.task;
    let started = Instant::now();
    let bs = plan.batch_size;
    let mut metrics = BTreeMap::new();
    let mut predictions = Vec::new();
    let mut n_truncated = 0;
    let mut probe_info = None;
    let mode = match (backend.head_labels(), task.kind()) {
        (Some(labels), _) => {
            let mapping = map_head_labels(labels, task)
                .map_err(|e| anyhow::anyhow!("{} on {}: {e}", backend.info().id, task.name()))?;
            for (i, (split, ds)) in pt.splits.iter().enumerate() {
                let out = dev(i, RequestKind::Classify)?;
                n_truncated += out.n_truncated;
                let preds: Vec<Prediction> = out
                    .rows
                    .iter()
                    .map(|row| match task.kind() {
                        TaskKind::Regression => Prediction::Score {
                            value: row[0] as f64,
                        },
                        TaskKind::Classification => {
                            let p = softmax(row);
                            let mut probs = vec![0.0; task.labels().len()];
                            for (k, &t) in mapping.iter().enumerate() {
                                probs[t] = p[k];
                            }
                            Prediction::Class {
                                label: argmax(probs.iter().copied()),
                                probs,
                            }
                        }
                    })
                    .collect();
                let gold: Vec<_> = ds.examples.iter().map(|e| e.gold).collect();
                metrics.extend(task.score(&preds, &gold, split.suffix));
                predictions.push(preds);
            }
            Mode::Head
        }
        (None, TaskKind::Regression) => {
            if !task.is_pair() {
                return Ok(Err(format!("{} needs a regression head", task.name())));
            }
            for (i, (split, ds)) in pt.splits.iter().enumerate() {
                let emb = dev(i, RequestKind::Embed)?;
                n_truncated += emb.n_truncated;
                let feats = features(ds, emb);
                let dim = feats.first().map_or(0, |f| f.len() / 4);
                let preds: Vec<Prediction> = feats
                    .iter()
                    .map(|f| Prediction::Score {
                        value: cosine(&f[..dim], &f[dim..2 * dim]),
                    })
                    .collect();
                let gold: Vec<_> = ds.examples.iter().map(|e| e.gold).collect();
                metrics.extend(task.score(&preds, &gold, split.suffix));
                predictions.push(preds);
            }
            Mode::Cosine
        }
        (None, TaskKind::Classification) => {
            let train = match load_train(plan, pt)? {
                Ok(t) => t,
                Err(reason) => return Ok(Err(reason)),
            };
            let rows = sample_rows(train.examples.len(), plan.probe.train_rows, plan.probe.seed);
            let sample = Dataset {
                examples: rows.iter().map(|&i| train.examples[i].clone()).collect(),
                origin: train.origin.clone(),
            };
            let emb = profile::call(
                backend,
                task.name(),
                RequestKind::Embed,
                &inputs(&sample),
                bs,
            )?;
            let x = features(&sample, emb);
            let y: Vec<usize> = sample
                .examples
                .iter()
                .filter_map(|e| e.gold.class())
                .collect();
            let probe = LogisticProbe::fit(&x, &y, task.labels().len(), &plan.probe);
            probe_info = Some(ProbeInfo {
                train_origin: train.origin.clone(),
                train_rows: sample.examples.len(),
                features: if task.is_pair() {
                    "[u, v, |u-v|, u*v]".into()
                } else {
                    "u".into()
                },
            });
            for (i, (split, ds)) in pt.splits.iter().enumerate() {
                let emb = dev(i, RequestKind::Embed)?;
                n_truncated += emb.n_truncated;
                let feats = features(ds, emb);
                let preds: Vec<Prediction> = feats
                    .iter()
                    .map(|f| {
                        let probs = probe.predict_proba(f);
                        Prediction::Class {
                            label: argmax(probs.iter().copied()),
                            probs,
                        }
                    })
                    .collect();
                let gold: Vec<_> = ds.examples.iter().map(|e| e.gold).collect();
                metrics.extend(task.score(&preds, &gold, split.suffix));
                predictions.push(preds);
            }
            Mode::Probe
        }
    };
    Ok(Ok(CellFile {
        cell: Cell {
            checkpoint: backend.info().clone(),
            mode,
            metrics,
            n_truncated,
            probe: probe_info,
            elapsed_s: started.elapsed().as_secs_f64(),
            cache_key,
            profile: None,
            scored_by: None,
        },
        predictions,
    }))
}
