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
use reports::{CheckpointInfo, Mode, ModelSummary, Results, RunSettings, TaskResult};

use crate::models::loader::{self, Family, ModelSpec};
use crate::models::resolve::{checkpoint_for, ModelRef};
use crate::models::TextInput;
use crate::plan::{PlannedTask, RunPlan};
use crate::profile::{self, energy::EnergyMeter, RequestKind};

mod score;
use crate::cells::{cell_path, checkpoint_key, loaded_line, read_cached};
pub use crate::cells::{CellFile, Role};
use score::inputs;
pub use score::score_cell;

/// What `execute` produced.
pub struct RunOutcome {
    pub results: Results,
    pub results_path: PathBuf,
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
        let loaded = loader::load(model, &plan.device, plan.max_length)?;
        let load_rss = match (rss_before, profile::memory::rss_bytes()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let backend = loaded.as_ref();
        say(loaded_line(backend.info(), started.elapsed().as_secs_f64()));
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
                            profile::Workload {
                                task: pt.task.name(),
                                examples: &examples,
                                kind,
                            },
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
        // Dropped before the next model loads, its memory given back.
        drop(loaded);
        crate::alloc::release_free_memory();
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
