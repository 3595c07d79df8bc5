//! The language-modelling cells of `harness run`: perplexity (`wikitext2`, `wikitext103`) and
//! generation (`generate`) with causal LM teachers and students, and how closely the student
//! follows the teacher token by token.
//!
//! Each model is measured alone: the teacher is loaded, runs every task's pass and is dropped
//! before the student loads, so each cell's peak memory is its own model's. Token-level
//! fidelity needs both models' full next-token distributions at the same positions: the
//! teacher's pass spills its logits over the first `--fidelity-tokens` tokens to a file
//! (`cells::TeacherLogits`) and the student's pass compares against them. Every finished
//! piece is cached in `OUT/cells/` like the GLUE cells, so an interrupted run resumes.

mod cells;
mod choice;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use reports::{LmSettings, Results, TaskResult, TokenFidelity};
use tasks::generation::perplexity::WindowSettings;
use tasks::generation::tasks::{LmData, LmKind};
use tasks::generation::wikitext::RawText;

use crate::cells::{cell_path, checkpoint_key, read_cached, Role};
use crate::models::loader::{Family, ModelSpec};
use crate::models::resolve::{self, checkpoint_for, ModelRef};
use crate::models::Backend;
use crate::plan::{PlannedLmTask, RunPlan};
use crate::profile::energy::EnergyMeter;
pub use cells::LmCellFile;
use cells::{FidelityFile, TeacherLogits};

/// The model specs of both roles for a task.
fn specs(plan: &RunPlan, task: &str) -> [(Role, ModelSpec); 2] {
    let spec = |model: &ModelRef, dequantize, quantize| ModelSpec {
        ckpt: checkpoint_for(model, task, &plan.aliases),
        family: Family::Decoder,
        quantize,
        dequantize,
    };
    [
        (
            Role::Teacher,
            spec(&plan.teacher, plan.dequantize_teacher, None),
        ),
        (
            Role::Student,
            spec(&plan.student, false, plan.student_quantize),
        ),
    ]
}

/// The model of `role` for a task.
pub(crate) fn spec_of(plan: &RunPlan, task: &str, role: Role) -> ModelSpec {
    let [(_, teacher), (_, student)] = specs(plan, task);
    match role {
        Role::Teacher => teacher,
        Role::Student => student,
    }
}

/// Part of a cell's cache key: the checkpoint and how its weights are transformed.
fn spec_key(spec: &ModelSpec) -> String {
    format!(
        "{};dequantize={};quantize={:?}",
        checkpoint_key(&spec.ckpt),
        spec.dequantize,
        spec.quantize
    )
}

/// A decoder's hard position limit, read without loading it.
fn peek_max_positions(spec: &ModelSpec) -> Result<Option<usize>> {
    match &spec.ckpt {
        ModelRef::Mock(_) => Ok(None),
        ckpt => {
            let (_, dir, _) = resolve::local_snapshot(ckpt)?;
            crate::models::decoder::peek_max_positions(&dir)
        }
    }
}

/// The part of the text that is evaluated: all of it, or the span the teacher's first
/// `max_eval_tokens` tokens cover (the same span for both models, whatever their tokenizers).
fn eval_span(text: &RawText, teacher: &dyn Backend, lm: &LmSettings) -> Result<RawText> {
    let Some(cap) = lm.max_eval_tokens else {
        return Ok(text.clone());
    };
    let (ids, ends) = teacher.tokenize(&text.text)?;
    if ids.len() <= cap {
        return Ok(text.clone());
    }
    let end = ends[cap - 1];
    Ok(RawText::new(
        text.text[..end].to_string(),
        &format!("{} (first {cap} tokens)", text.origin),
    )?)
}

/// The cache keys of a task's two cells and of the pair comparison.
struct Keys {
    teacher: String,
    student: String,
    pair: String,
}

fn keys(plan: &RunPlan, pt: &PlannedLmTask) -> Keys {
    let lm = &plan.lm;
    let name = pt.task.name();
    let [(_, tspec), (_, sspec)] = specs(plan, name);
    let profile_key = plan.profile.as_ref().map_or("off".to_string(), |s| s.key());
    let key_of = |spec: &ModelSpec| {
        format!(
            "task={name}@v{};model={};lm={}/{}/{:?}/{};data={};profile={profile_key}",
            pt.task.version(),
            spec_key(spec),
            lm.context_length,
            lm.stride,
            lm.max_eval_tokens,
            lm.max_new_tokens,
            plan.data_origin,
        ) + &plan.load_options_key()
    };
    let (teacher, student) = (key_of(&tspec), key_of(&sspec));
    let pair = format!("{teacher}|{student}|fidelity={}", lm.fidelity_tokens);
    Keys {
        teacher,
        student,
        pair,
    }
}

/// The task's finished cells and comparison, when all three are cached with today's keys.
fn cached(plan: &RunPlan, pt: &PlannedLmTask) -> Option<(LmCellFile, LmCellFile, FidelityFile)> {
    let k = keys(plan, pt);
    let name = pt.task.name();
    let t = read_cached::<LmCellFile>(&cell_path(&plan.out, name, "teacher"), &k.teacher, |c| {
        &c.cell.cache_key
    })?;
    let s = read_cached::<LmCellFile>(&cell_path(&plan.out, name, "student"), &k.student, |c| {
        &c.cell.cache_key
    })?;
    let f = read_cached::<FidelityFile>(&cell_path(&plan.out, name, "fidelity"), &k.pair, |f| {
        &f.cache_key
    })?;
    Some((t, s, f))
}

/// A task being computed: what the teacher's pass leaves for the student's.
#[derive(Default)]
struct Pending {
    span: Option<RawText>,
    window: Option<WindowSettings>,
    teacher: Option<LmCellFile>,
    student: Option<LmCellFile>,
    teacher_logits: Option<TeacherLogits>,
    teacher_vocabulary: Option<u64>,
    fidelity: Option<TokenFidelity>,
}

/// Check that every prompt plus the new tokens fits the model.
fn check_prompts_fit(model: &dyn Backend, prompts: &[String], lm: &LmSettings) -> Result<()> {
    let Some(max) = model.max_positions() else {
        return Ok(());
    };
    for p in prompts {
        let n = model.tokenize(p)?.0.len();
        if n + lm.max_new_tokens > max {
            bail!(
                "{}: a prompt of {n} tokens + {} new tokens exceeds the model's {max} positions; lower --max-new-tokens",
                model.info().id,
                lm.max_new_tokens
            );
        }
    }
    Ok(())
}

/// A task's context length: the run's, capped by what both of its models take.
fn window_for(plan: &RunPlan, task: &str) -> Result<WindowSettings> {
    let lm = &plan.lm;
    let [(_, t), (_, s)] = specs(plan, task);
    let context = [
        Some(lm.context_length),
        peek_max_positions(&t)?,
        peek_max_positions(&s)?,
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(lm.context_length);
    Ok(WindowSettings {
        context,
        stride: lm.stride.min(context),
    })
}

/// The language-modelling cells of a run.
pub struct LmCells {
    /// A perplexity or generation task's two cells and pair file from an earlier run, when
    /// all three are reusable (multiple-choice cells are reused one by one, into `pending`).
    reused: Vec<Option<(LmCellFile, LmCellFile, FidelityFile)>>,
    /// Cells to compute: task index and role.
    todo: Vec<(usize, Role)>,
    pending: BTreeMap<usize, Pending>,
    /// Multiple-choice cells reused or computed (`task.role`, cache key), for a shard's
    /// record; perplexity and generation tasks are recorded by their task result.
    finished: Vec<(String, String)>,
}

impl LmCells {
    /// Read back each task's finished cells; the others are to do. A multiple-choice task's
    /// cells are independent (its paired statistics are computed from both when the result is
    /// put together), so each is reused on its own; a perplexity or generation task is reused
    /// whole or recomputed whole, since the student's figures need the teacher's pass in the
    /// same process. Only the roles `mine` accepts are read or computed: a shard may have one
    /// role of a multiple-choice task but both or neither of the others.
    pub fn new(plan: &RunPlan, say: &dyn Fn(String), mine: &dyn Fn(&str, Role) -> bool) -> Self {
        let mut reused = Vec::new();
        let mut todo = Vec::new();
        let mut pending: BTreeMap<usize, Pending> = BTreeMap::new();
        let mut finished = Vec::new();
        for (i, pt) in plan.lm_tasks.iter().enumerate() {
            let name = pt.task.name();
            let roles: Vec<Role> = [Role::Teacher, Role::Student]
                .into_iter()
                .filter(|&r| mine(name, r))
                .collect();
            if pt.task.kind() != LmKind::Choice {
                let done = if roles.is_empty() {
                    None
                } else {
                    cached(plan, pt)
                };
                if done.is_none() {
                    todo.extend(roles.iter().map(|&r| (i, r)));
                }
                reused.push(done);
                continue;
            }
            reused.push(None);
            if roles.is_empty() {
                // Another shard's task.
                continue;
            }
            let k = keys(plan, pt);
            for role in roles {
                let key = match role {
                    Role::Teacher => &k.teacher,
                    Role::Student => &k.student,
                };
                let path = cell_path(&plan.out, name, role.name());
                match read_cached::<LmCellFile>(&path, key, |c| &c.cell.cache_key) {
                    Some(cf) => {
                        say(format!(
                            "{} {name}: reusing the finished cell in {}",
                            role.name(),
                            plan.out.display()
                        ));
                        let p = pending.entry(i).or_default();
                        match role {
                            Role::Teacher => p.teacher = Some(cf),
                            Role::Student => p.student = Some(cf),
                        }
                        finished.push((format!("{name}.{}", role.name()), key.clone()));
                    }
                    None => todo.push((i, role)),
                }
            }
        }
        LmCells {
            reused,
            todo,
            pending,
            finished,
        }
    }

    /// The model of each cell to compute, teacher cells first (the student's fidelity needs
    /// the teacher's pass).
    pub fn jobs(&self, plan: &RunPlan) -> Vec<ModelSpec> {
        [Role::Teacher, Role::Student]
            .into_iter()
            .flat_map(|role| {
                self.todo
                    .iter()
                    .filter(move |(_, r)| *r == role)
                    .map(move |&(i, _)| spec_of(plan, plan.lm_tasks[i].task.name(), role))
            })
            .collect()
    }

    /// Compute every cell that `spec` serves (teacher cells before student cells), with the
    /// model loaded for them.
    pub fn run_model(
        &mut self,
        plan: &RunPlan,
        spec: &ModelSpec,
        model: &dyn Backend,
        meter: &EnergyMeter,
        say: &dyn Fn(String),
    ) -> Result<()> {
        let lm = &plan.lm;
        let mine = |role: Role| -> Vec<usize> {
            self.todo
                .iter()
                .filter(|&&(i, r)| {
                    r == role && spec_of(plan, plan.lm_tasks[i].task.name(), role) == *spec
                })
                .map(|&(i, _)| i)
                .collect()
        };
        let jobs: Vec<(Role, usize)> = [Role::Teacher, Role::Student]
            .into_iter()
            .flat_map(|role| mine(role).into_iter().map(move |i| (role, i)))
            .collect();
        for &(_, i) in &jobs {
            if let LmData::Prompts(prompts) = &plan.lm_tasks[i].data {
                check_prompts_fit(model, prompts, lm)?;
            }
        }
        for (role, i) in jobs {
            let pt = &plan.lm_tasks[i];
            let name = pt.task.name();
            let k = keys(plan, pt);
            let key = match role {
                Role::Teacher => k.teacher.clone(),
                Role::Student => k.student.clone(),
            };
            let p = self.pending.entry(i).or_default();
            if role == Role::Teacher {
                p.teacher_vocabulary = model.vocabulary_id();
            }
            // Token-level comparisons need both models to tokenize alike.
            let same_tokenizer =
                p.teacher_vocabulary.is_some() && p.teacher_vocabulary == model.vocabulary_id();
            let cf = match (&pt.data, pt.task.kind()) {
                (LmData::Text(text), LmKind::Perplexity) => {
                    if role == Role::Teacher {
                        p.span = Some(eval_span(text, model, lm)?);
                    }
                    if p.window.is_none() {
                        p.window = Some(window_for(plan, name)?);
                    }
                    let span = p.span.as_ref().expect("the teacher's span");
                    let window = p.window.expect("window");
                    say(format!(
                        "{} {name}: perplexity over {} words in windows of {} tokens (stride {})",
                        role.name(),
                        span.words,
                        window.context,
                        window.stride
                    ));
                    let cf = cells::perplexity_cell(model, name, span, window, plan, meter, key)?;
                    say(format!(
                        "{} {name}: perplexity {:.3}, word perplexity {:.3}, bits per byte {:.4} ({:.1} s)",
                        role.name(),
                        cf.cell.metrics["perplexity"],
                        cf.cell.metrics["word_perplexity"],
                        cf.cell.metrics["bits_per_byte"],
                        cf.cell.elapsed_s
                    ));
                    match role {
                        Role::Teacher => {
                            p.teacher_logits = Some(TeacherLogits::spill(
                                model,
                                span,
                                window.context,
                                lm.fidelity_tokens,
                                cells::spill_path(&plan.out, name),
                            )?)
                        }
                        Role::Student => {
                            let t = p.teacher_logits.take().expect("the teacher's logits");
                            p.fidelity = Some(t.compare(model, same_tokenizer)?);
                        }
                    }
                    cf
                }
                (LmData::Prompts(prompts), LmKind::Generate) => {
                    let cf = cells::generate_cell(model, name, prompts, plan, meter, key)?;
                    if let Some(prof) = &cf.cell.profile {
                        say(format!(
                            "{} {name}: {} prompts, time to first token {:.1} ms, {:.1} decode tokens/s",
                            role.name(),
                            prompts.len(),
                            prof.ttft_ms.unwrap_or(f64::NAN),
                            prof.decode_tokens_per_s.unwrap_or(f64::NAN)
                        ));
                    }
                    if role == Role::Student {
                        let t = p.teacher.as_ref().expect("the teacher's cell");
                        p.fidelity = Some(cells::generate_fidelity(same_tokenizer, t, &cf));
                    }
                    cf
                }
                (LmData::Choices(set), LmKind::Choice) => {
                    say(format!(
                        "{} {name}: {} examples, {} log-likelihood requests",
                        role.name(),
                        set.docs.len(),
                        set.docs.iter().map(|d| d.requests.len()).sum::<usize>()
                    ));
                    let cf =
                        choice::choice_cell(model, name, set, plan, meter, key, role.name(), say)?;
                    let m = &cf.cell.metrics;
                    say(format!(
                        "{} {name}: acc {:.2}% ± {:.2}{} ({:.1} s)",
                        role.name(),
                        m["acc"] * 100.0,
                        m.get("acc_stderr").copied().unwrap_or(f64::NAN) * 100.0,
                        m.get("acc_norm")
                            .map_or(String::new(), |v| format!(", acc_norm {:.2}%", v * 100.0)),
                        cf.cell.elapsed_s
                    ));
                    // The paired statistics are computed when the task's result is put
                    // together ([`lm_task_result`]), from both cells wherever they ran.
                    cf
                }
                _ => bail!("{name}: its data does not match its kind"),
            };
            reports::io::write_json_atomic(&cell_path(&plan.out, name, role.name()), &cf)?;
            if pt.task.kind() == LmKind::Choice {
                // The cell is saved: its progress file has served.
                let partial = cell_path(&plan.out, name, &format!("{}.partial", role.name()));
                if partial.exists() {
                    std::fs::remove_file(&partial)
                        .with_context(|| format!("cannot remove {}", partial.display()))?;
                }
                self.finished
                    .push((format!("{name}.{}", role.name()), cf.cell.cache_key.clone()));
            }
            match role {
                Role::Teacher => p.teacher = Some(cf),
                // A multiple-choice task has no pair file: its cells are reused one by one.
                Role::Student if pt.task.kind() == LmKind::Choice => p.student = Some(cf),
                Role::Student => {
                    p.student = Some(cf);
                    // Only a computed comparison is written; a reused one is on disk.
                    reports::io::write_json_atomic(
                        &cell_path(&plan.out, name, "fidelity"),
                        &FidelityFile {
                            cache_key: k.pair.clone(),
                            fidelity: p.fidelity.clone(),
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The multiple-choice cells (`task.role`) reused or computed, with their cache keys,
    /// for a shard's record.
    pub fn finished(&self) -> &[(String, String)] {
        &self.finished
    }

    /// Put every task whose two cells this process has into `results`, writing the results
    /// file after each. (A shard may hold one cell of a task; `harness merge` joins it.)
    pub fn finish(
        &mut self,
        plan: &RunPlan,
        results: &mut Results,
        results_path: &Path,
        say: &dyn Fn(String),
    ) -> Result<()> {
        for (i, pt) in plan.lm_tasks.iter().enumerate() {
            let name = pt.task.name();
            let (t, s, pair) = match self.reused[i].take() {
                Some(done) => {
                    say(format!(
                        "{name}: reusing the finished cells in {}",
                        plan.out.display()
                    ));
                    done
                }
                None => {
                    let Some(p) = self.pending.remove(&i) else {
                        continue;
                    };
                    let (Some(t), Some(s)) = (p.teacher, p.student) else {
                        continue;
                    };
                    let k = keys(plan, pt);
                    (
                        t,
                        s,
                        FidelityFile {
                            cache_key: k.pair,
                            fidelity: p.fidelity,
                        },
                    )
                }
            };
            let tr = lm_task_result(&plan.out, pt, t, s, pair.fidelity, say)?;
            if results.teacher.checkpoint.is_none() {
                results.teacher.checkpoint = Some(tr.teacher.checkpoint.clone());
            }
            if results.student.checkpoint.is_none() {
                results.student.checkpoint = Some(tr.student.checkpoint.clone());
            }
            results.note_kernels();
            results.tasks.insert(name.to_string(), tr);
            results.update_macro();
            reports::io::write_json_atomic(results_path, results)
                .with_context(|| format!("cannot write {}", results_path.display()))?;
        }
        Ok(())
    }
}

/// A language-modelling task's result from its two cells and the pair's token fidelity, with
/// its predictions (or continuations) file in `out`: what `harness run` and `harness merge`
/// both write. A multiple-choice task's paired statistics are computed here from the two
/// cells' answers, so they are the same wherever each cell ran.
pub fn lm_task_result(
    out: &Path,
    pt: &PlannedLmTask,
    t: LmCellFile,
    s: LmCellFile,
    fidelity: Option<TokenFidelity>,
    say: &dyn Fn(String),
) -> Result<TaskResult> {
    let name = pt.task.name();
    if pt.task.kind() == LmKind::Generate {
        cells::write_continuations(out, name, &t, &s)?;
    }
    let n = match &pt.data {
        LmData::Text(_) => t.cell.metrics.get("tokens_scored").copied().unwrap_or(0.0) as usize,
        LmData::Prompts(p) => p.len(),
        LmData::Choices(set) => set.docs.len(),
    };
    let comparison = match &pt.data {
        LmData::Choices(set) => {
            if t.answers.len() != set.docs.len() || s.answers.len() != set.docs.len() {
                bail!(
                    "{name}: the cells answer {} and {} examples, the data has {}",
                    t.answers.len(),
                    s.answers.len(),
                    set.docs.len()
                );
            }
            choice::write_predictions(out, name, set, &t, &s)?;
            Some(choice::compare(
                set,
                pt.task.primary_metric(),
                &t.answers,
                &s.answers,
            ))
        }
        _ => None,
    };
    let mut tr = TaskResult::new(
        pt.task.version(),
        pt.task.primary_metric(),
        n,
        t.cell,
        s.cell,
    );
    if pt.task.lower_is_better() {
        tr = tr.lower_is_better();
    }
    if let Some(f) = &fidelity {
        if let (Some(kl), Some(top1)) = (f.kl, f.top1_agreement) {
            say(format!(
                "{name}: mean KL(teacher || student) {kl:.5} nats, top-1 agreement {:.2}% over {} positions",
                top1 * 100.0,
                f.positions
            ));
        }
    }
    if let Some(c) = &comparison {
        say(format!(
            "{name}: student - teacher {:+.2} points (95% CI {:+.2} to {:+.2}), same answer on {:.1}%, McNemar p = {:.3}",
            c.primary_diff.estimate * 100.0,
            c.primary_diff.low * 100.0,
            c.primary_diff.high * 100.0,
            c.top1_agreement.unwrap_or(f64::NAN) * 100.0,
            c.mcnemar_p.unwrap_or(f64::NAN)
        ));
    }
    tr.fidelity = fidelity;
    tr.comparison = comparison;
    if pt.task.kind() == LmKind::Generate {
        // New tokens per prompt describe the run; the student does not "keep" them.
        tr.retention = None;
    }
    Ok(tr)
}
