//! The cells of text tasks (encoders): which are reused from `OUT/cells/`, which are
//! computed, and computing them one model at a time (the profiler's passes, whose throughput
//! pass also gives the answers the cell is scored on).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use reports::{CheckpointInfo, Results, TaskResult};

use super::score::{inputs, score_cell};
use crate::cells::{cell_path, checkpoint_key, read_cached, CellFile, Role};
use crate::models::loader::{Family, ModelSpec};
use crate::models::resolve::{checkpoint_for, ModelRef};
use crate::models::{Backend, Batched, TextInput};
use crate::plan::{PlannedTask, RunPlan};
use crate::profile::{self, energy::EnergyMeter, RequestKind};

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
    ) + &plan.load_options_key()
}

fn write_predictions(
    out: &Path,
    pt: &PlannedTask,
    teacher: &CellFile,
    student: &CellFile,
) -> Result<()> {
    let lines = pt.splits.iter().enumerate().flat_map(|(s, (split, ds))| {
        ds.examples.iter().enumerate().map(move |(i, ex)| {
            serde_json::json!({
                "id": ex.id,
                "split": if split.suffix.is_empty() { "dev" } else { split.suffix.trim_start_matches('_') },
                "text_a": ex.text_a,
                "text_b": ex.text_b,
                "gold": ex.gold,
                "teacher": teacher.predictions[s][i],
                "student": student.predictions[s][i],
            })
        })
    });
    crate::cells::write_predictions_file(out, pt.task.name(), lines)
}

/// The text-task cells of a run.
pub(super) struct TextCells {
    done: BTreeMap<(usize, Role), CellFile>,
    /// Cells to compute: role, task index, checkpoint, cache key.
    todo: Vec<(Role, usize, ModelRef, String)>,
}

impl TextCells {
    /// Read back every finished cell whose cache key matches; the others are to do. Only the
    /// cells `mine` accepts (this shard's, or all) are read or computed.
    pub fn new(plan: &RunPlan, say: &dyn Fn(String), mine: &dyn Fn(&str, Role) -> bool) -> Self {
        let mut done = BTreeMap::new();
        let mut todo = Vec::new();
        for (role, model) in [
            (Role::Teacher, &plan.teacher),
            (Role::Student, &plan.student),
        ] {
            for (ti, pt) in plan.tasks.iter().enumerate() {
                if !mine(pt.task.name(), role) {
                    continue;
                }
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
        TextCells { done, todo }
    }

    fn spec(plan: &RunPlan, role: Role, ckpt: &ModelRef) -> ModelSpec {
        ModelSpec {
            ckpt: ckpt.clone(),
            family: Family::Encoder,
            quantize: match role {
                Role::Student => plan.student_quantize,
                Role::Teacher => None,
            },
            dequantize: false,
        }
    }

    /// The model of each cell to compute, teacher cells first.
    pub fn jobs(&self, plan: &RunPlan) -> Vec<ModelSpec> {
        self.todo
            .iter()
            .map(|(role, _, ckpt, _)| Self::spec(plan, *role, ckpt))
            .collect()
    }

    /// Compute every cell that `spec` serves, with the model loaded for them; the results
    /// file is rewritten after each cell, so an interrupted run loses nothing finished.
    #[allow(clippy::too_many_arguments)] // the run's state, passed down rather than shared
    pub fn run_model(
        &mut self,
        plan: &RunPlan,
        spec: &ModelSpec,
        backend: &dyn Backend,
        load_rss: Option<u64>,
        meter: &EnergyMeter,
        results: &mut Results,
        results_path: &Path,
        say: &dyn Fn(String),
    ) -> Result<()> {
        let mine: Vec<(Role, usize, String)> = self
            .todo
            .iter()
            .filter(|(r, _, c, _)| Self::spec(plan, *r, c) == *spec)
            .map(|(r, ti, _, key)| (*r, *ti, key.clone()))
            .collect();
        for (role, ti, key) in mine {
            let pt = &plan.tasks[ti];
            let load_rss = &load_rss;
            say(format!(
                "{} {}: scoring {} examples with {}",
                role.name(),
                pt.task.name(),
                pt.n_examples(),
                backend.info().id
            ));
            // The dev splits are encoded once at the run's batch size: by the profiler's
            // throughput pass, whose first lap the scores are taken from, or (without
            // profiling) by a scoring pass of their own.
            let split_inputs: Vec<Vec<TextInput>> =
                pt.splits.iter().map(|(_, ds)| inputs(ds)).collect();
            let profiled =
                std::cell::RefCell::new(None::<(reports::Profile, Vec<Option<Batched>>)>);
            let dev = |split: usize, kind: RequestKind| -> Result<Batched> {
                let Some(settings) = &plan.profile else {
                    return profile::call(
                        backend,
                        pt.task.name(),
                        kind,
                        &split_inputs[split],
                        plan.batch_size,
                    );
                };
                if profiled.borrow().is_none() {
                    let p = profile::profile_cell(
                        backend,
                        profile::Workload {
                            task: pt.task.name(),
                            splits: &split_inputs,
                            kind,
                        },
                        plan.batch_size,
                        settings,
                        meter,
                        *load_rss,
                    )?;
                    let lap = p.first_lap.into_iter().map(Some).collect();
                    *profiled.borrow_mut() = Some((p.profile, lap));
                }
                let mut state = profiled.borrow_mut();
                let (_, lap) = state.as_mut().expect("profiled just above");
                lap[split]
                    .take()
                    .context("a split's outputs were asked for twice")
            };
            match score_cell(backend, pt, plan, key, &dev)? {
                Ok(mut cf) => {
                    cf.cell.scored_by = Some(match &plan.profile {
                        Some(_) => {
                            format!("throughput pass, first lap (batch {})", plan.batch_size)
                        }
                        None => format!("scoring pass (batch {})", plan.batch_size),
                    });
                    if let Some((p, _)) = profiled.take() {
                        say(format!(
                        "{} {}: batch-1 pass {:.1} s (p50 {:.2} ms, p99 {:.2} ms), {:.1} examples/s at batch {}{}, energy {} ({})",
                        role.name(),
                        pt.task.name(),
                        p.batch1_pass_s,
                        p.latency_ms.p50,
                        p.latency_ms.p99,
                        p.throughput_per_s,
                        plan.batch_size,
                        lap_spread(&p.throughput_laps_per_s),
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
                    self.done.insert((ti, role), cf);
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
            self.assemble(plan, results)?;
            reports::io::write_json_atomic(results_path, results)
                .with_context(|| format!("cannot write {}", results_path.display()))?;
        }
        Ok(())
    }

    /// Every finished cell (`task.role`) with its cache key, for a shard's record.
    pub fn finished(&self, plan: &RunPlan) -> Vec<(String, String)> {
        self.done
            .iter()
            .map(|((ti, role), cf)| {
                (
                    format!("{}.{}", plan.tasks[*ti].task.name(), role.name()),
                    cf.cell.cache_key.clone(),
                )
            })
            .collect()
    }

    /// Put every finished task into `results` (reused cells alone still make a results file).
    pub fn finish(&self, plan: &RunPlan, results: &mut Results, results_path: &Path) -> Result<()> {
        if !plan.tasks.is_empty() && self.todo.is_empty() {
            self.assemble(plan, results)?;
            reports::io::write_json_atomic(results_path, results)
                .with_context(|| format!("cannot write {}", results_path.display()))?;
        }
        Ok(())
    }

    /// Fill in task results for every task whose two cells are done, and the summaries.
    fn assemble(&self, plan: &RunPlan, results: &mut Results) -> Result<()> {
        let done = &self.done;
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
                results
                    .tasks
                    .insert(name.to_string(), text_task_result(&plan.out, pt, t, s)?);
            }
        }
        results.update_macro();
        Ok(())
    }
}

/// A text task's result from its two finished cells, with the paired statistics, and its
/// predictions file in `out`: what `harness run` and `harness merge` both write.
pub fn text_task_result(
    out: &Path,
    pt: &PlannedTask,
    t: &CellFile,
    s: &CellFile,
) -> Result<TaskResult> {
    write_predictions(out, pt, t, s)?;
    let mut tr = TaskResult::new(
        pt.task.version(),
        pt.task.primary_metric(),
        pt.n_examples(),
        t.cell.clone(),
        s.cell.clone(),
    );
    tr.comparison = Some(crate::fidelity::compare_cells(pt, t, s));
    Ok(tr)
}

/// The model of a text task's cell of `role`.
pub fn text_spec(plan: &RunPlan, role: Role, task: &str) -> ModelSpec {
    let model = match role {
        Role::Teacher => &plan.teacher,
        Role::Student => &plan.student,
    };
    TextCells::spec(plan, role, &checkpoint_for(model, task, &plan.aliases))
}

/// The laps of a throughput pass as ` (laps 241-250, median 246, 3 laps)`, or nothing for a
/// single lap (no spread to show).
fn lap_spread(laps: &[f64]) -> String {
    let Some((lo, hi)) = reports::schema::lap_range(laps) else {
        return String::new();
    };
    let mut sorted = laps.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = crate::profile::latency::percentile(&sorted, 50.0);
    format!(
        " (laps {lo:.1}-{hi:.1}, median {median:.1}, {} laps)",
        sorted.len()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lap_spread_is_min_max_and_median() {
        assert_eq!(super::lap_spread(&[5.0]), "");
        assert_eq!(
            super::lap_spread(&[3.0, 1.0, 2.0, 10.0]),
            " (laps 1.0-10.0, median 2.5, 4 laps)"
        );
    }
}
