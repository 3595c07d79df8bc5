//! `harness run`: score teacher and student on every planned task, one (model, task) cell at a
//! time, and keep the results file current after each cell.
//!
//! Each finished cell is saved to `OUT/cells/<task>.<role>.json` (atomically) with a cache key
//! of everything that determines its numbers; a rerun with the same settings reuses it instead
//! of recomputing, so an interrupted run resumes and loses nothing already finished.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use reports::{ModelSummary, Results, RunSettings};

use crate::models::loader::{self, ModelSpec};
use crate::plan::RunPlan;
use crate::profile::{self, energy::EnergyMeter};

mod score;
mod text;
use crate::cells::loaded_line;
pub use crate::cells::{CellFile, Role};
use crate::lm::LmCells;
pub use score::score_cell;
use text::TextCells;
pub use text::{text_spec, text_task_result};

/// What `execute` produced.
pub struct RunOutcome {
    pub results: Results,
    pub results_path: PathBuf,
}

fn git_commit() -> Option<String> {
    option_env!("HARNESS_GIT_COMMIT")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Run the plan: each student's pair in turn, the teacher's cells computed once. Progress goes
/// to stderr unless `plan.quiet`.
///
/// A later student's pair runs in `OUT/students/NAME` (its own results, cells, predictions,
/// resumable like any run) with copies of the teacher's finished cells, so the teacher is
/// scored and measured once; perplexity tasks rerun the teacher beside each student, because
/// token fidelity needs both models' distributions in one process. `OUT/results.json` holds the
/// first pair and, in `more_students`, each later one; it is rewritten as each pair finishes.
pub fn execute(plan: &mut RunPlan) -> Result<RunOutcome> {
    plan.select_student(0);
    let mut outcome = execute_pair(plan)?;
    for i in 1..plan.students.len() {
        let dir = plan.pair_dir(i);
        share_teacher_cells(&plan.run_out, &dir)?;
        plan.select_student(i);
        if !plan.quiet {
            eprintln!(
                "student {} of {}: {} (pair folder {})",
                i + 1,
                plan.students.len(),
                plan.student_name,
                dir.display()
            );
        }
        let pair = execute_pair(plan)?;
        let rel = dir
            .strip_prefix(&plan.run_out)
            .unwrap_or(&dir)
            .to_string_lossy()
            .replace('\\', "/");
        outcome.results.more_students.push(reports::StudentRun {
            student: pair.results.student,
            tasks: pair.results.tasks,
            skipped: pair.results.skipped,
            macro_score: pair.results.macro_score,
            dir: rel,
        });
        reports::io::write_json_atomic(&outcome.results_path, &outcome.results)
            .with_context(|| format!("cannot write {}", outcome.results_path.display()))?;
    }
    plan.select_student(0);
    Ok(outcome)
}

/// Copy the teacher's finished cells of the run's folder into a later pair's, where the cache
/// keys let that pair reuse them instead of scoring the teacher again.
fn share_teacher_cells(run_out: &std::path::Path, pair_dir: &std::path::Path) -> Result<()> {
    let (from, to) = (run_out.join("cells"), pair_dir.join("cells"));
    std::fs::create_dir_all(&to).with_context(|| format!("cannot create {}", to.display()))?;
    let Ok(entries) = std::fs::read_dir(&from) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".teacher.json") {
            let bytes = std::fs::read(entry.path())
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            let target = to.join(&name);
            reports::io::write_atomic(&target, &bytes)
                .with_context(|| format!("cannot write {}", target.display()))?;
        }
    }
    Ok(())
}

/// Run the current student's pair (see [`RunPlan::select_student`]) in `plan.out`.
fn execute_pair(plan: &RunPlan) -> Result<RunOutcome> {
    let say = |msg: String| {
        if !plan.quiet {
            eprintln!("{msg}");
        }
    };
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
            limit: plan.load_options.limit,
        },
        environment: Some(profile::fingerprint::collect(&plan.device_name)),
        teacher: ModelSummary {
            id: plan.teacher_arg.clone(),
            source: plan.teacher.source().into(),
            checkpoint: None,
            name: Some(plan.teacher_name.clone()),
        },
        student: ModelSummary {
            id: plan.student_arg.clone(),
            source: plan.student.source().into(),
            checkpoint: None,
            name: Some(plan.student_name.clone()),
        },
        tasks: BTreeMap::new(),
        skipped: BTreeMap::new(),
        macro_score: None,
        shard: None,
        merge: None,
        more_students: Vec::new(),
    };
    let results_path = plan.out.join("results.json");

    // The one run loop. Every cell to compute, text tasks and language-modelling tasks alike,
    // names its model; each distinct model is loaded once, in the order of first need
    // (teacher cells first), runs all its cells and is dropped, its memory given back, before
    // the next loads: each model is measured alone (optimum-benchmark runs a process per
    // benchmark for the same reason). Every model is checked first, so that a bad one fails
    // the run before any cell is computed. A quantized student is a model of its own.
    let cells_dir = plan.out.join("cells");
    std::fs::create_dir_all(&cells_dir)
        .with_context(|| format!("cannot create {}", cells_dir.display()))?;
    // With --shard, only this shard's cells are read or computed.
    let planned = plan.shard.map(|s| crate::shard::plan_cells(plan, s.count));
    let mine = |task: &str, role: Role| -> bool {
        let (Some(s), Some(cells)) = (&plan.shard, &planned) else {
            return true;
        };
        cells.iter().any(|c| {
            c.task == task && (c.role == role.name() || c.role == "pair") && c.shard == s.index
        })
    };
    if let (Some(s), Some(cells)) = (&plan.shard, &planned) {
        let ids: Vec<String> = cells
            .iter()
            .filter(|c| c.shard == s.index)
            .map(reports::PlannedCell::id)
            .collect();
        say(format!(
            "shard {s}: {} of the plan's {} cells ({})",
            ids.len(),
            cells.len(),
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.join(", ")
            }
        ));
        results.shard = Some(reports::ShardRecord {
            index: s.index,
            count: s.count,
            planned: cells.clone(),
            finished: Default::default(),
        });
        crate::merge::write_task_data(plan, &mine)?;
        reports::io::write_json_atomic(&results_path, &results)
            .with_context(|| format!("cannot write {}", results_path.display()))?;
    }
    let mut text = TextCells::new(plan, &say, &mine);
    let mut lm = LmCells::new(plan, &say, &mine);
    let mut models: Vec<ModelSpec> = Vec::new();
    for spec in text.jobs(plan).into_iter().chain(lm.jobs(plan)) {
        if !models.contains(&spec) {
            models.push(spec);
        }
    }
    tracing::info!(
        models = models.len(),
        f32_kernels = crate::kernels::isa::f32_level().map_or("portable", |l| l.name()),
        int_kernels = crate::kernels::isa::int_level().map_or("portable", |l| l.name()),
        "models of this pair, each loaded once"
    );
    loader::check_all(&models, &plan.device, plan.max_length)?;
    let meter = plan
        .profile
        .as_ref()
        .map_or(EnergyMeter::Unavailable("profiling is off".into()), |s| {
            EnergyMeter::for_device(&plan.device_name, &s.powercap_root, s.watts_per_core)
        });
    for spec in &models {
        let started = Instant::now();
        let rss_before = profile::memory::rss_bytes();
        let spinner = crate::progress::spinner(
            crate::progress::wanted(plan.quiet),
            &format!("loading {}", crate::cells::checkpoint_key(&spec.ckpt)),
        );
        tracing::info!(model = ?spec.ckpt, quantize = ?spec.quantize, "loading");
        let loaded = loader::load(spec, &plan.device, plan.max_length);
        spinner.finish_and_clear();
        let loaded = loaded?;
        let load_rss = match (rss_before, profile::memory::rss_bytes()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let model = loaded.as_ref();
        say(loaded_line(model.info(), started.elapsed().as_secs_f64()));
        text.run_model(
            plan,
            spec,
            model,
            load_rss,
            &meter,
            &mut results,
            &results_path,
            &say,
        )?;
        lm.run_model(plan, spec, model, &meter, &say)?;
        drop(loaded);
        crate::alloc::release_free_memory();
    }
    text.finish(plan, &mut results, &results_path)?;
    lm.finish(plan, &mut results, &results_path, &say)?;
    if let Some(record) = results.shard.as_mut() {
        // A shard's tasks may all be partial; its cells are what it leaves for the merge.
        let mut finished = text.finished(plan);
        finished.extend(lm.finished().iter().cloned());
        for c in &record.planned {
            if c.role == "pair" && c.shard == record.index && results.tasks.contains_key(&c.task) {
                finished.push((c.id(), "result".into()));
            }
        }
        record.finished = finished.into_iter().collect();
        reports::io::write_json_atomic(&results_path, &results)
            .with_context(|| format!("cannot write {}", results_path.display()))?;
    } else if results.tasks.is_empty() {
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
