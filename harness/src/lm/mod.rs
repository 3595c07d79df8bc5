//! The language-modelling half of `harness run`: perplexity (`wikitext2`, `wikitext103`) and
//! generation (`generate`) with causal LM teachers and students, and how closely the student
//! follows the teacher token by token.
//!
//! Each model is measured alone: the teacher is loaded, runs every task's pass and is dropped
//! before the student loads, so each cell's peak memory is its own model's. Token-level
//! fidelity needs both models' full next-token distributions at the same positions: the
//! teacher's pass spills its logits over the first `--fidelity-tokens` tokens to a file
//! ([`cells::TeacherLogits`]) and the student's pass compares against them. Every finished
//! piece is cached in `OUT/cells/` like the GLUE cells, so an interrupted run resumes.

mod cells;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use reports::{LmSettings, Results, TaskResult, TokenFidelity};
use tasks::generation::perplexity::WindowSettings;
use tasks::generation::tasks::{LmData, LmKind};
use tasks::generation::wikitext::RawText;

use crate::cells::{cell_path, checkpoint_key, loaded_line, read_cached, Role};
use crate::models::loader::{self, Family, ModelSpec};
use crate::models::resolve::{self, checkpoint_for, ModelRef};
use crate::models::Backend;
use crate::plan::{PlannedLmTask, RunPlan};
use crate::profile::energy::EnergyMeter;
use cells::{FidelityFile, LmCellFile, TeacherLogits};

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
        )
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
fn cached(plan: &RunPlan, pt: &PlannedLmTask) -> Option<(LmCellFile, LmCellFile, TokenFidelity)> {
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
    Some((t, s, f.fidelity))
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

/// Score every language-modelling task of the plan and put its result in `results`, writing
/// the results file after each task.
pub fn run_lm_tasks(
    plan: &RunPlan,
    results: &mut Results,
    results_path: &Path,
    meter: &EnergyMeter,
) -> Result<()> {
    let say = |msg: String| {
        if !plan.quiet {
            eprintln!("{msg}");
        }
    };
    let lm = &plan.lm;
    // Each task's cells from an earlier run, read once; the others are computed.
    let mut reused: Vec<_> = plan.lm_tasks.iter().map(|pt| cached(plan, pt)).collect();
    let todo: Vec<usize> = (0..plan.lm_tasks.len())
        .filter(|&i| reused[i].is_none())
        .collect();
    let mut pending: BTreeMap<usize, Pending> = BTreeMap::new();
    if !todo.is_empty() {
        // Every model is checked before any cell is computed; then the context length both
        // models of a task can take.
        let mut all: Vec<ModelSpec> = Vec::new();
        for role in [Role::Teacher, Role::Student] {
            for &i in &todo {
                let spec = specs(plan, plan.lm_tasks[i].task.name())[role as usize]
                    .1
                    .clone();
                if !all.contains(&spec) {
                    all.push(spec);
                }
            }
        }
        loader::check_all(&all, &plan.device, plan.max_length)?;
        for &i in &todo {
            let [(_, t), (_, s)] = specs(plan, plan.lm_tasks[i].task.name());
            let context = [
                Some(lm.context_length),
                peek_max_positions(&t)?,
                peek_max_positions(&s)?,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(lm.context_length);
            pending.insert(
                i,
                Pending {
                    window: Some(WindowSettings {
                        context,
                        stride: lm.stride.min(context),
                    }),
                    ..Default::default()
                },
            );
        }
        std::fs::create_dir_all(plan.out.join("cells"))?;
    }
    for role in [Role::Teacher, Role::Student] {
        // The distinct models of this role, in task order (an alias may name one per task).
        let mut models: Vec<ModelSpec> = Vec::new();
        for &i in &todo {
            let spec = specs(plan, plan.lm_tasks[i].task.name())[role as usize]
                .1
                .clone();
            if !models.contains(&spec) {
                models.push(spec);
            }
        }
        for spec in &models {
            let started = Instant::now();
            let loaded = loader::load(spec, &plan.device, plan.max_length)?;
            let model = loaded.as_ref();
            say(loaded_line(model.info(), started.elapsed().as_secs_f64()));
            for &i in &todo {
                let pt = &plan.lm_tasks[i];
                let name = pt.task.name();
                if specs(plan, name)[role as usize].1 != *spec {
                    continue;
                }
                if let LmData::Prompts(prompts) = &pt.data {
                    check_prompts_fit(model, prompts, lm)?;
                }
            }
            for &i in &todo {
                let pt = &plan.lm_tasks[i];
                let name = pt.task.name();
                if specs(plan, name)[role as usize].1 != *spec {
                    continue;
                }
                let k = keys(plan, pt);
                let key = match role {
                    Role::Teacher => k.teacher.clone(),
                    Role::Student => k.student.clone(),
                };
                let p = pending.get_mut(&i).expect("pending task");
                let cf = match (&pt.data, pt.task.kind()) {
                    (LmData::Text(text), LmKind::Perplexity) => {
                        if role == Role::Teacher {
                            p.span = Some(eval_span(text, model, lm)?);
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
                        let cf =
                            cells::perplexity_cell(model, name, span, window, plan, meter, key)?;
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
                                p.fidelity = Some(t.compare(model)?);
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
                        match role {
                            Role::Teacher => p.teacher_vocabulary = model.vocabulary_id(),
                            Role::Student => {
                                let same = p.teacher_vocabulary.is_some()
                                    && p.teacher_vocabulary == model.vocabulary_id();
                                let t = p.teacher.as_ref().expect("the teacher's cell");
                                p.fidelity = Some(cells::generate_fidelity(same, t, &cf));
                            }
                        }
                        cf
                    }
                    _ => bail!("{name}: its data does not match its kind"),
                };
                reports::io::write_json_atomic(&cell_path(&plan.out, name, role.name()), &cf)?;
                match role {
                    Role::Teacher => p.teacher = Some(cf),
                    Role::Student => {
                        p.student = Some(cf);
                        // Only a computed comparison is written; a reused one is on disk.
                        reports::io::write_json_atomic(
                            &cell_path(&plan.out, name, "fidelity"),
                            &FidelityFile {
                                cache_key: k.pair.clone(),
                                fidelity: p.fidelity.clone().expect("fidelity"),
                            },
                        )?;
                    }
                }
            }
            // Dropped before the next model loads, its memory given back.
            drop(loaded);
            crate::alloc::release_free_memory();
        }
    }
    for (i, pt) in plan.lm_tasks.iter().enumerate() {
        let name = pt.task.name();
        let (t, s, fidelity) = match reused[i].take() {
            Some(done) => {
                say(format!(
                    "{name}: reusing the finished cells in {}",
                    plan.out.display()
                ));
                done
            }
            None => {
                let p = pending.remove(&i).expect("computed");
                (
                    p.teacher.context("teacher cell")?,
                    p.student.context("student cell")?,
                    p.fidelity.context("fidelity")?,
                )
            }
        };
        if pt.task.kind() == LmKind::Generate {
            cells::write_continuations(&plan.out, name, &t, &s)?;
        }
        let n = match &pt.data {
            LmData::Text(_) => t.cell.metrics.get("tokens_scored").copied().unwrap_or(0.0) as usize,
            LmData::Prompts(p) => p.len(),
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
        if let (Some(kl), Some(top1)) = (fidelity.kl, fidelity.top1_agreement) {
            say(format!(
                "{name}: mean KL(teacher || student) {kl:.5} nats, top-1 agreement {:.2}% over {} positions",
                top1 * 100.0,
                fidelity.positions
            ));
        }
        tr.fidelity = Some(fidelity);
        if pt.task.kind() == LmKind::Generate {
            // New tokens per prompt describe the run; the student does not "keep" them.
            tr.retention = None;
        }
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
