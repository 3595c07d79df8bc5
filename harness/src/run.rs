//! `harness run`: score teacher and student on every planned task, one (model, task) cell at a
//! time, and keep the results file current after each cell.
//!
//! Each finished cell is saved to `OUT/cells/<task>.<role>.json` (atomically) with a cache key
//! of everything that determines its numbers; a rerun with the same settings reuses it instead
//! of recomputing, so an interrupted run resumes and loses nothing already finished.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use reports::{
    Cell, CheckpointInfo, Mode, ModelSummary, ProbeInfo, Results, RunSettings, TaskResult,
};
use serde::{Deserialize, Serialize};
use tasks::data::DataError;
use tasks::probe_fit::{pair_features, sample_rows, LogisticProbe};
use tasks::{DataSource, Dataset, Prediction, TaskKind};

use crate::hub_data;
use crate::labels::map_head_labels;
use crate::models::loader::{self, Family, ModelSpec};
use crate::models::resolve::{self, checkpoint_for, ModelRef};
use crate::models::{Backend, TextInput};
use crate::plan::{PlannedTask, RunPlan};
use crate::profile::{self, energy::EnergyMeter, RequestKind};

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

/// What `execute` produced.
pub struct RunOutcome {
    pub results: Results,
    pub results_path: PathBuf,
}

/// The Hub's GLUE evaluation splits for `task_names`, read from parquet.
pub fn hub_glue_source(task_names: &[&str]) -> Result<DataSource> {
    let mut splits: BTreeMap<String, Vec<BTreeMap<String, serde_json::Value>>> = BTreeMap::new();
    for name in task_names {
        let task = tasks::find_task(name).map_err(anyhow::Error::msg)?;
        let glue = glue_config(name);
        for split in task.eval_splits() {
            let file = hub_data::parquet_file(glue, split.hub_split);
            let paths =
                resolve::fetch_dataset_files(hub_data::GLUE_REPO, std::slice::from_ref(&file))?;
            splits.insert(
                split.hub_split.to_string(),
                hub_data::read_parquet_rows(&paths[0])?,
            );
        }
    }
    Ok(DataSource::Records(splits))
}

/// The config name of a task in `nyu-mll/glue`.
fn glue_config(task: &str) -> &'static str {
    tasks::glue::ALL
        .iter()
        .find(|t| t.name == task)
        .map(|t| t.hub_config)
        .unwrap_or("")
}

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
            let file = hub_data::parquet_file(glue_config(task.name()), split.hub_split);
            let paths = resolve::fetch_dataset_files(hub_data::GLUE_REPO, &[file])?;
            let mut rows = BTreeMap::new();
            rows.insert(split.hub_split.to_string(), hub_data::read_parquet_rows(&paths[0])?);
            Ok(Ok(task.load(&DataSource::Records(rows), &split)?))
        }
    }
}

/// A stable description of a checkpoint reference, for cache keys. Local folders include the
/// weight file's size and modification time, so replaced weights are recomputed.
pub(crate) fn checkpoint_key(r: &ModelRef) -> String {
    match r {
        ModelRef::Local(dir) => {
            let weights = match crate::models::decoder::gguf_path(dir) {
                Ok(Some(gguf)) => Some(gguf),
                _ => crate::models::find_weights(dir).ok().map(|w| w.path),
            };
            let stamp = weights
                .and_then(|w| std::fs::metadata(w).ok())
                .map(|m| {
                    let mtime = m
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    format!("{}b@{mtime}", m.len())
                })
                .unwrap_or_default();
            format!("{}#{stamp}", crate::models::canonical(dir))
        }
        ModelRef::Hub { repo, revision } => {
            format!("{repo}@{}", revision.as_deref().unwrap_or("main"))
        }
        ModelRef::Alias(a) => a.clone(),
        ModelRef::Mock(spec) => format!("mock:{spec}"),
    }
}

fn cache_key(plan: &RunPlan, ckpt: &ModelRef, role: Role, pt: &PlannedTask) -> String {
    let p = &plan.probe;
    let quantize = match role {
        Role::Student => plan.student_quantize,
        Role::Teacher => None,
    };
    format!(
        "task={}@v{};model={};quantize={quantize:?};max_length={:?};probe={}/{}/{}/{};data={};dtype=f32;profile={}",
        pt.task.name(),
        pt.task.version(),
        checkpoint_key(ckpt),
        plan.max_length,
        p.train_rows,
        p.seed,
        p.l2,
        p.iterations,
        plan.data_origin,
        // Metrics do not depend on the batch size, but throughput does.
        plan.profile.as_ref().map_or("off".to_string(), |s| format!(
            "{}@bs{}",
            s.key(),
            plan.batch_size
        ))
    )
}

/// `OUT/cells/<task>.<what>.json`: a role's cell (`teacher`, `student`) or a pair's file.
pub(crate) fn cell_path(out: &Path, task: &str, what: &str) -> PathBuf {
    out.join("cells").join(format!("{task}.{what}.json"))
}

/// A cached file whose cache key (read by `key_of`) is `key`; `None` when absent, unreadable
/// or computed with other settings.
pub(crate) fn read_cached<T: for<'de> Deserialize<'de>>(
    path: &Path,
    key: &str,
    key_of: fn(&T) -> &str,
) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: T = serde_json::from_str(&text).ok()?;
    (key_of(&v) == key).then_some(v)
}

/// The progress line for a loaded model.
pub(crate) fn loaded_line(info: &CheckpointInfo, seconds: f64) -> String {
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

fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
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

fn inputs(ds: &Dataset) -> Vec<TextInput<'_>> {
    ds.examples
        .iter()
        .map(|e| TextInput {
            a: &e.text_a,
            b: e.text_b.as_deref(),
        })
        .collect()
}

/// Pooled features of each example: the embedding, or SentEval pair features for pairs.
fn probe_features(
    backend: &dyn Backend,
    task: &str,
    ds: &Dataset,
    batch_size: usize,
) -> Result<(Vec<Vec<f32>>, usize)> {
    let singles: Vec<TextInput> = ds
        .examples
        .iter()
        .flat_map(|e| {
            std::iter::once(TextInput {
                a: &e.text_a,
                b: None,
            })
            .chain(e.text_b.as_deref().map(|b| TextInput { a: b, b: None }))
        })
        .collect();
    let emb = backend.embed(task, &singles, batch_size)?;
    let mut rows = emb.rows.into_iter();
    let feats = ds
        .examples
        .iter()
        .map(|e| {
            let u = rows.next().unwrap_or_default();
            match e.text_b {
                Some(_) => pair_features(&u, &rows.next().unwrap_or_default()),
                None => u,
            }
        })
        .collect();
    Ok((feats, emb.n_truncated))
}

/// Score one model on one task. `Ok(Err(reason))` means the cell cannot be scored here (for
/// example no head and no train split); real failures are errors.
pub fn score_cell(
    backend: &dyn Backend,
    pt: &PlannedTask,
    plan: &RunPlan,
    cache_key: String,
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
            for (split, ds) in &pt.splits {
                let out = backend.classify(task.name(), &inputs(ds), bs)?;
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
                                label: argmax(&probs),
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
            for (split, ds) in &pt.splits {
                let (feats, trunc) = probe_features(backend, task.name(), ds, bs)?;
                n_truncated += trunc;
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
            let (x, _) = probe_features(backend, task.name(), &sample, bs)?;
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
            for (split, ds) in &pt.splits {
                let (feats, trunc) = probe_features(backend, task.name(), ds, bs)?;
                n_truncated += trunc;
                let preds: Vec<Prediction> = feats
                    .iter()
                    .map(|f| {
                        let probs = probe.predict_proba(f);
                        Prediction::Class {
                            label: argmax(&probs),
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
        },
        predictions,
    }))
}

fn write_predictions(
    out: &Path,
    pt: &PlannedTask,
    teacher: &CellFile,
    student: &CellFile,
) -> Result<()> {
    let dir = out.join("predictions");
    std::fs::create_dir_all(&dir)?;
    let mut text = String::new();
    for (s, (split, ds)) in pt.splits.iter().enumerate() {
        for (i, ex) in ds.examples.iter().enumerate() {
            let line = serde_json::json!({
                "id": ex.id,
                "split": if split.suffix.is_empty() { "dev" } else { split.suffix.trim_start_matches('_') },
                "text_a": ex.text_a,
                "text_b": ex.text_b,
                "gold": ex.gold,
                "teacher": teacher.predictions[s][i],
                "student": student.predictions[s][i],
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
    }
    reports::io::write_atomic(
        &dir.join(format!("{}.jsonl", pt.task.name())),
        text.as_bytes(),
    )
    .with_context(|| format!("cannot write predictions in {}", dir.display()))
}

fn git_commit() -> Option<String> {
    option_env!("HARNESS_GIT_COMMIT")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Run the plan. Progress goes to stderr unless `plan.quiet`.
pub fn execute(plan: &RunPlan) -> Result<RunOutcome> {
    let say = |msg: String| {
        if !plan.quiet {
            eprintln!("{msg}");
        }
    };
    let roles = [
        (Role::Teacher, &plan.teacher, &plan.teacher_arg),
        (Role::Student, &plan.student, &plan.student_arg),
    ];
    let mut results = Results {
        schema_version: reports::SCHEMA_VERSION,
        harness_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: git_commit(),
        created_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        settings: RunSettings {
            batch_size: plan.batch_size,
            max_length: plan.max_length,
            device: plan.device_name.clone(),
            dtype: "f32".into(),
            data_source: plan.data_origin.clone(),
            probe_train_rows: plan.probe.train_rows,
            probe_seed: plan.probe.seed,
            probe_l2: plan.probe.l2,
            probe_iterations: plan.probe.iterations,
            lm: (!plan.lm_tasks.is_empty()).then(|| plan.lm.clone()),
        },
        environment: Some(profile::fingerprint::collect(&plan.device_name)),
        teacher: ModelSummary {
            id: plan.teacher_arg.clone(),
            source: plan.teacher.source().into(),
            checkpoint: None,
        },
        student: ModelSummary {
            id: plan.student_arg.clone(),
            source: plan.student.source().into(),
            checkpoint: None,
        },
        tasks: BTreeMap::new(),
        skipped: BTreeMap::new(),
        macro_score: None,
    };
    let results_path = plan.out.join("results.json");

    // Which cells need work, and which can be reused from an earlier run.
    let mut done: BTreeMap<(usize, Role), CellFile> = BTreeMap::new();
    let mut todo: Vec<(Role, usize, ModelRef, String)> = Vec::new();
    for (role, model, _) in roles {
        for (ti, pt) in plan.tasks.iter().enumerate() {
            let ckpt = checkpoint_for(model, pt.task.name(), &plan.aliases);
            let key = cache_key(plan, &ckpt, role, pt);
            let path = cell_path(&plan.out, pt.task.name(), role.name());
            match read_cached::<CellFile>(&path, &key, |c| &c.cell.cache_key) {
                Some(cf) => {
                    say(format!(
                        "{} {}: reusing the finished cell in {}",
                        role.name(),
                        pt.task.name(),
                        plan.out.display()
                    ));
                    done.insert((ti, role), cf);
                }
                None => todo.push((role, ti, ckpt, key)),
            }
        }
    }

    // Each model is loaded for its own cells and dropped before the next one loads, so that
    // its peak RSS and load memory are its own (optimum-benchmark runs a process per benchmark
    // for the same reason). Every model is checked first, so that a bad one fails the run
    // before any cell is computed. A quantized student is a model of its own.
    let spec = |role: Role, ckpt: &ModelRef| ModelSpec {
        ckpt: ckpt.clone(),
        family: Family::Encoder,
        quantize: match role {
            Role::Student => plan.student_quantize,
            Role::Teacher => None,
        },
        dequantize: false,
    };
    let mut specs: Vec<ModelSpec> = Vec::new();
    for (role, _, ckpt, _) in &todo {
        let s = spec(*role, ckpt);
        if !specs.contains(&s) {
            specs.push(s);
        }
    }
    loader::check_all(&specs, &plan.device, plan.max_length)?;

    let meter = plan
        .profile
        .as_ref()
        .map_or(EnergyMeter::Unavailable("profiling is off".into()), |s| {
            EnergyMeter::for_device(&plan.device_name, &s.powercap_root, s.watts_per_core)
        });

    let cells_dir = plan.out.join("cells");
    std::fs::create_dir_all(&cells_dir)
        .with_context(|| format!("cannot create {}", cells_dir.display()))?;
    for model in &specs {
        let started = Instant::now();
        let rss_before = profile::memory::rss_bytes();
        let backend = loader::load(model, &plan.device, plan.max_length)?;
        let load_rss = match (rss_before, profile::memory::rss_bytes()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        say(loaded_line(backend.info(), started.elapsed().as_secs_f64()));
        let backend = backend.as_ref();
        let mine = todo.iter().filter(|(r, _, c, _)| spec(*r, c) == *model);
        for (role, ti, _, key) in mine.cloned().collect::<Vec<_>>() {
            let pt = &plan.tasks[ti];
            let load_rss = &load_rss;
            say(format!(
                "{} {}: scoring {} examples with {}",
                role.name(),
                pt.task.name(),
                pt.n_examples(),
                backend.info().id
            ));
            match score_cell(backend, pt, plan, key)? {
                Ok(mut cf) => {
                    if let Some(settings) = &plan.profile {
                        let examples: Vec<TextInput> =
                            pt.splits.iter().flat_map(|(_, ds)| inputs(ds)).collect();
                        let kind = match cf.cell.mode {
                            Mode::Head => RequestKind::Classify,
                            Mode::Cosine | Mode::Probe => RequestKind::Embed,
                            Mode::LogLikelihood | Mode::Generate => {
                                bail!("language-modelling cells are not scored here")
                            }
                        };
                        let p = profile::profile_cell(
                            backend,
                            pt.task.name(),
                            &examples,
                            kind,
                            plan.batch_size,
                            settings,
                            &meter,
                            *load_rss,
                        )?;
                        say(format!(
                        "{} {}: batch-1 pass {:.1} s (p50 {:.2} ms, p99 {:.2} ms), {:.1} examples/s at batch {}, energy {} ({})",
                        role.name(),
                        pt.task.name(),
                        p.batch1_pass_s,
                        p.latency_ms.p50,
                        p.latency_ms.p99,
                        p.throughput_per_s,
                        p.throughput_batch_size,
                        p.energy_j_per_1k.map_or("n/a".into(), |j| format!("{j:.1} J/1k")),
                        p.energy_source
                    ));
                        cf.cell.profile = Some(p);
                    }
                    say(format!(
                        "{} {}: {} mode, {} = {:.4} ({:.1} s)",
                        role.name(),
                        pt.task.name(),
                        cf.cell.mode.as_str(),
                        pt.task.primary_metric(),
                        cf.cell
                            .metrics
                            .get(pt.task.primary_metric())
                            .copied()
                            .unwrap_or(f64::NAN),
                        cf.cell.elapsed_s
                    ));
                    reports::io::write_json_atomic(
                        &cell_path(&plan.out, pt.task.name(), role.name()),
                        &cf,
                    )?;
                    done.insert((ti, role), cf);
                }
                Err(reason) => {
                    say(format!(
                        "{} {}: not scored: {reason}",
                        role.name(),
                        pt.task.name()
                    ));
                    results.skipped.insert(
                        pt.task.name().to_string(),
                        format!("{}: {reason}", role.name()),
                    );
                }
            }
            assemble(plan, &mut results, &done)?;
            reports::io::write_json_atomic(&results_path, &results)
                .with_context(|| format!("cannot write {}", results_path.display()))?;
        }
    }
    // Reused cells alone (nothing computed) still make a results file.
    if !plan.tasks.is_empty() && specs.is_empty() {
        assemble(plan, &mut results, &done)?;
        reports::io::write_json_atomic(&results_path, &results)
            .with_context(|| format!("cannot write {}", results_path.display()))?;
    }
    crate::lm::run_lm_tasks(plan, &mut results, &results_path, &meter)?;
    if results.tasks.is_empty() {
        let reasons: Vec<String> = results
            .skipped
            .iter()
            .map(|(t, r)| format!("{t}: {r}"))
            .collect();
        bail!("no task could be scored ({})", reasons.join("; "));
    }
    Ok(RunOutcome {
        results,
        results_path,
    })
}

/// Fill in task results for every task whose two cells are done, and the summaries.
fn assemble(
    plan: &RunPlan,
    results: &mut Results,
    done: &BTreeMap<(usize, Role), CellFile>,
) -> Result<()> {
    let first = |role: Role| -> Option<CheckpointInfo> {
        (0..plan.tasks.len())
            .find_map(|ti| done.get(&(ti, role)).map(|c| c.cell.checkpoint.clone()))
    };
    results.teacher.checkpoint = first(Role::Teacher);
    results.student.checkpoint = first(Role::Student);
    results.note_kernels();
    for (ti, pt) in plan.tasks.iter().enumerate() {
        let name = pt.task.name();
        if results.tasks.contains_key(name) {
            continue;
        }
        if let (Some(t), Some(s)) = (
            done.get(&(ti, Role::Teacher)),
            done.get(&(ti, Role::Student)),
        ) {
            write_predictions(&plan.out, pt, t, s)?;
            let mut tr = TaskResult::new(
                pt.task.version(),
                pt.task.primary_metric(),
                pt.n_examples(),
                t.cell.clone(),
                s.cell.clone(),
            );
            tr.comparison = Some(crate::fidelity::compare_cells(pt, t, s));
            results.tasks.insert(name.to_string(), tr);
        }
    }
    results.update_macro();
    Ok(())
}
