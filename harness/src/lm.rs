//! The language-modelling half of `harness run`: perplexity (`wikitext2`, `wikitext103`) and
//! generation (`generate`) with causal LM teachers and students, and how closely the student
//! follows the teacher token by token.
//!
//! Each model is scored and profiled on its own (its own pass, its own peak memory), then the
//! pair is compared: token-level fidelity needs both models' full next-token distributions at
//! the same positions, which are far too large to keep (vocabulary x tokens), so a bounded
//! fidelity pass runs both models over the same disjoint windows (`--fidelity-tokens`).
//! Every finished piece is cached in `OUT/cells/` like the GLUE cells, so an interrupted run
//! resumes.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::quantized::GgmlDType;
use reports::{Cell, LmSettings, Mode, Profile, Results, TaskResult, TokenFidelity};
use serde::{Deserialize, Serialize};
use tasks::generation::fidelity::TokenFidelity as FidelitySum;
use tasks::generation::perplexity::{sliding_window_nll, WindowSettings};
use tasks::generation::tasks::{
    continuation_match, generation_metrics, perplexity_metrics, LmData, LmKind, LmTask,
};
use tasks::generation::wikitext::RawText;

use crate::models::decoder::DecoderBackend;
use crate::models::resolve::{self, checkpoint_for, ModelRef};
use crate::plan::RunPlan;
use crate::profile::{self, energy::EnergyMeter, latency, memory};
use crate::run::{cell_path, read_cached, Role};

/// One language-modelling task with its loaded data.
pub struct PlannedLmTask {
    pub task: &'static dyn LmTask,
    pub data: LmData,
}

/// What a decoder is loaded as: the checkpoint and how its weights are transformed.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderSpec {
    pub ckpt: ModelRef,
    /// `--dequantize-teacher`: a GGUF file loaded as f32.
    pub dequantize: bool,
    /// `--student-quantize`.
    pub quantize: Option<GgmlDType>,
}

impl DecoderSpec {
    fn key(&self) -> String {
        format!(
            "{};dequantize={};quantize={:?}",
            crate::run::checkpoint_key(&self.ckpt),
            self.dequantize,
            self.quantize
        )
    }
}

/// A finished language-modelling cell as saved on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LmCellFile {
    pub cell: Cell,
    /// `generate`: each prompt's continuation.
    #[serde(default)]
    pub continuations: Vec<SavedContinuation>,
}

/// One prompt's greedy continuation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedContinuation {
    pub prompt: String,
    pub text: String,
    pub tokens: Vec<u32>,
}

/// The pair comparison as saved on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FidelityFile {
    cache_key: String,
    fidelity: TokenFidelity,
}

/// The model specs of both roles for a task.
fn specs(plan: &RunPlan, task: &str) -> [(Role, DecoderSpec); 2] {
    [
        (
            Role::Teacher,
            DecoderSpec {
                ckpt: checkpoint_for(&plan.teacher, task, &plan.aliases),
                dequantize: plan.dequantize_teacher,
                quantize: None,
            },
        ),
        (
            Role::Student,
            DecoderSpec {
                ckpt: checkpoint_for(&plan.student, task, &plan.aliases),
                dequantize: false,
                quantize: plan.student_quantize,
            },
        ),
    ]
}

fn load_decoder(spec: &DecoderSpec, plan: &RunPlan) -> Result<DecoderBackend> {
    let (id, dir, resolved) = resolve::local_snapshot(&spec.ckpt)?;
    let mut b = DecoderBackend::load(&id, &dir, &plan.device, spec.dequantize)?;
    if let Some(r) = resolved {
        b.set_resolved(r);
    }
    if let Some(q) = spec.quantize {
        b.quantize(q)
            .with_context(|| format!("{}: cannot quantize to {q:?}", b.info().id))?;
    }
    Ok(b)
}

/// The context length both models can take.
fn context_length(lm: &LmSettings, a: &DecoderBackend, b: &DecoderBackend) -> usize {
    [
        Some(lm.context_length),
        a.max_positions(),
        b.max_positions(),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(lm.context_length)
}

/// The part of the text that is evaluated: all of it, or the span the teacher's first
/// `max_eval_tokens` tokens cover (the same span for both models, whatever their tokenizers).
fn eval_span(text: &RawText, teacher: &DecoderBackend, lm: &LmSettings) -> Result<RawText> {
    let Some(cap) = lm.max_eval_tokens else {
        return Ok(text.clone());
    };
    let (ids, ends) = teacher.encode(&text.text)?;
    if ids.len() <= cap {
        return Ok(text.clone());
    }
    let end = ends[cap - 1];
    Ok(RawText::new(
        text.text[..end].to_string(),
        &format!("{} (first {cap} tokens)", text.origin),
    )?)
}

struct Timed {
    latencies_ms: Vec<f64>,
    total_s: f64,
    peak_scope: &'static str,
    energy: profile::energy::EnergyReading,
}

/// Run `f` under the memory and energy probes.
fn measured<T>(
    meter: &EnergyMeter,
    f: impl FnOnce(&mut Vec<f64>) -> Result<T>,
) -> Result<(T, Timed)> {
    let peak_scope = if memory::reset_peak() {
        "phase"
    } else {
        "process"
    };
    let mut latencies_ms = Vec::new();
    let start = meter.start();
    let started = Instant::now();
    let out = f(&mut latencies_ms)?;
    let total_s = started.elapsed().as_secs_f64();
    let energy = meter.stop(start);
    Ok((
        out,
        Timed {
            latencies_ms,
            total_s,
            peak_scope,
            energy,
        },
    ))
}

fn profile_of(t: &Timed, items: usize, tokens: usize, flops_per_item: f64) -> Result<Profile> {
    let lat = latency::summarise(&t.latencies_ms).context("nothing was timed")?;
    let per_item = t.energy.joules.map(|j| j / items as f64);
    Ok(Profile {
        batch1_pass_s: t.total_s,
        batch1_examples: items,
        latency_ms: lat.clone(),
        forward_latency_ms: lat,
        throughput_batch_size: 1,
        throughput_per_s: items as f64 / t.total_s,
        tokens_per_s: tokens as f64 / t.total_s,
        throughput_iterations: items,
        throughput_s: t.total_s,
        warmup_iterations: 1,
        peak_rss_bytes: memory::peak_rss_bytes(),
        peak_rss_scope: t.peak_scope.into(),
        peak_device_memory_bytes: None,
        load_rss_bytes: None,
        energy_j: t.energy.joules,
        energy_j_per_example: per_item,
        energy_j_per_1k: per_item.map(|j| j * 1000.0),
        energy_source: t.energy.source.clone(),
        energy_detail: t.energy.detail.clone(),
        flops_per_example: flops_per_item,
        mean_tokens_per_example: tokens as f64 / items as f64,
        ttft_ms: None,
        decode_tokens_per_s: None,
    })
}

/// Perplexity of one model over the evaluated span.
fn perplexity_cell(
    model: &DecoderBackend,
    span: &RawText,
    window: WindowSettings,
    plan: &RunPlan,
    meter: &EnergyMeter,
    key: String,
) -> Result<LmCellFile> {
    let started = Instant::now();
    let (ids, _) = model.encode(&span.text)?;
    // One untimed window first, so that the timed pass starts warm.
    if plan.profile.is_some() {
        model.window_logits(&ids[..ids.len().min(window.context)])?;
    }
    // Tokens run through the model, window by window (the last window may be shorter).
    let mut tokens_run = 0usize;
    let (nll, timed) = measured(meter, |lat| {
        sliding_window_nll(&ids, window, |w| {
            let t0 = Instant::now();
            let rows = model.window_logits(w).map_err(|e| format!("{e:#}"))?;
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
            tokens_run += w.len();
            Ok(rows)
        })
        .map_err(anyhow::Error::msg)
    })?;
    let profile = plan
        .profile
        .as_ref()
        .map(|_| {
            profile_of(
                &timed,
                nll.windows,
                tokens_run,
                model.flops_per_token() * tokens_run as f64 / nll.windows as f64,
            )
        })
        .transpose()?;
    Ok(LmCellFile {
        cell: Cell {
            checkpoint: model.info().clone(),
            mode: Mode::LogLikelihood,
            metrics: perplexity_metrics(&nll, span),
            n_truncated: 0,
            probe: None,
            elapsed_s: started.elapsed().as_secs_f64(),
            cache_key: key,
            profile,
        },
        continuations: Vec::new(),
    })
}

/// Greedy continuations of every prompt by one model.
fn generate_cell(
    model: &DecoderBackend,
    prompts: &[String],
    plan: &RunPlan,
    meter: &EnergyMeter,
    key: String,
) -> Result<LmCellFile> {
    let started = Instant::now();
    let n = plan.lm.max_new_tokens;
    if plan.profile.is_some() {
        model.generate(&prompts[0], n.min(4))?;
    }
    let (outs, timed) = measured(meter, |lat| {
        let mut outs = Vec::with_capacity(prompts.len());
        for p in prompts {
            let t0 = Instant::now();
            let c = model.generate(p, n)?;
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
            outs.push(c);
        }
        Ok(outs)
    })?;
    let new_tokens: Vec<usize> = outs.iter().map(|c| c.tokens.len()).collect();
    let eos: Vec<bool> = outs.iter().map(|c| c.stopped_at_eos).collect();
    let mut ttft: Vec<f64> = outs.iter().map(|c| c.ttft_s * 1e3).collect();
    ttft.sort_by(f64::total_cmp);
    let decode_tokens: usize = new_tokens.iter().map(|t| t.saturating_sub(1)).sum();
    let decode_s: f64 = outs.iter().map(|c| c.decode_s).sum();
    let all_tokens: usize = outs.iter().map(|c| c.prompt_tokens + c.tokens.len()).sum();
    let profile = plan
        .profile
        .as_ref()
        .map(|_| -> Result<Profile> {
            let mut p = profile_of(
                &timed,
                prompts.len(),
                new_tokens.iter().sum(),
                model.flops_per_token() * all_tokens as f64 / prompts.len() as f64,
            )?;
            p.mean_tokens_per_example = all_tokens as f64 / prompts.len() as f64;
            p.ttft_ms = Some(latency::percentile(&ttft, 0.5));
            p.decode_tokens_per_s = (decode_s > 0.0).then(|| decode_tokens as f64 / decode_s);
            Ok(p)
        })
        .transpose()?;
    Ok(LmCellFile {
        cell: Cell {
            checkpoint: model.info().clone(),
            mode: Mode::Generate,
            metrics: generation_metrics(&new_tokens, &eos),
            n_truncated: 0,
            probe: None,
            elapsed_s: started.elapsed().as_secs_f64(),
            cache_key: key,
            profile,
        },
        continuations: prompts
            .iter()
            .zip(outs)
            .map(|(p, c)| SavedContinuation {
                prompt: p.clone(),
                text: c.text,
                tokens: c.tokens,
            })
            .collect(),
    })
}

/// Token-level fidelity over disjoint windows covering the first `fidelity_tokens` tokens.
fn perplexity_fidelity(
    teacher: &DecoderBackend,
    student: &DecoderBackend,
    span: &RawText,
    context: usize,
    lm: &LmSettings,
) -> Result<TokenFidelity> {
    if !teacher.same_tokenizer(student) {
        return Ok(TokenFidelity {
            same_tokenizer: false,
            positions: 0,
            kl: None,
            top1_agreement: None,
            greedy_token_match: None,
            greedy_exact_match: None,
            note: "the tokenizers differ: token-level figures are undefined; compare word perplexity and bits per byte".into(),
        });
    }
    let (ids, _) = teacher.encode(&span.text)?;
    let ids = &ids[..ids.len().min(lm.fidelity_tokens)];
    let mut sum = FidelitySum::default();
    for chunk in ids.chunks(context) {
        let (t, s) = (teacher.window_logits(chunk)?, student.window_logits(chunk)?);
        for (a, b) in t.iter().zip(&s) {
            sum.add(a, b).map_err(anyhow::Error::msg)?;
        }
    }
    Ok(TokenFidelity {
        same_tokenizer: true,
        positions: sum.positions,
        kl: Some(sum.mean_kl()),
        top1_agreement: Some(sum.top1_agreement()),
        greedy_token_match: None,
        greedy_exact_match: None,
        note: format!(
            "every position of the first {} tokens, in disjoint windows of {context}",
            sum.positions
        ),
    })
}

fn generate_fidelity(
    same_tokenizer: bool,
    teacher: &LmCellFile,
    student: &LmCellFile,
) -> TokenFidelity {
    let n = teacher.continuations.len().max(1) as f64;
    let pairs = teacher.continuations.iter().zip(&student.continuations);
    if same_tokenizer {
        let (mut token, mut exact) = (0.0, 0usize);
        for (t, s) in pairs {
            let (m, e) = continuation_match(&t.tokens, &s.tokens);
            token += m;
            exact += usize::from(e);
        }
        TokenFidelity {
            same_tokenizer: true,
            positions: teacher.continuations.len(),
            kl: None,
            top1_agreement: None,
            greedy_token_match: Some(token / n),
            greedy_exact_match: Some(exact as f64 / n),
            note: "greedy continuations compared token by token".into(),
        }
    } else {
        let exact = pairs.filter(|(t, s)| t.text == s.text).count();
        TokenFidelity {
            same_tokenizer: false,
            positions: teacher.continuations.len(),
            kl: None,
            top1_agreement: None,
            greedy_token_match: None,
            greedy_exact_match: Some(exact as f64 / n),
            note: "the tokenizers differ: continuations compared as text only".into(),
        }
    }
}

fn write_continuations(out: &Path, task: &str, t: &LmCellFile, s: &LmCellFile) -> Result<()> {
    let dir = out.join("predictions");
    std::fs::create_dir_all(&dir)?;
    let mut text = String::new();
    for (i, (a, b)) in t.continuations.iter().zip(&s.continuations).enumerate() {
        let line = serde_json::json!({
            "id": i.to_string(),
            "prompt": a.prompt,
            "teacher": a.text,
            "student": b.text,
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    reports::io::write_atomic(&dir.join(format!("{task}.jsonl")), text.as_bytes())
        .with_context(|| format!("cannot write predictions in {}", dir.display()))
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
    let key_of = |spec: &DecoderSpec| {
        format!(
            "task={name}@v{};model={};lm={}/{}/{:?}/{};data={};profile={profile_key}",
            pt.task.version(),
            spec.key(),
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
    let mut loaded: Vec<(DecoderSpec, DecoderBackend)> = Vec::new();
    // Load every model that has work up front and check that the prompts fit, so that a bad
    // model or setting fails before any cell is computed.
    // Each task's cells from an earlier run, read once.
    let mut reused: Vec<_> = plan.lm_tasks.iter().map(|pt| cached(plan, pt)).collect();
    for (pt, reused) in plan.lm_tasks.iter().zip(&reused) {
        if reused.is_some() {
            continue;
        }
        for (_, spec) in specs(plan, pt.task.name()) {
            if !loaded.iter().any(|(s, _)| *s == spec) {
                let started = Instant::now();
                let b = load_decoder(&spec, plan)?;
                say(crate::run::loaded_line(
                    b.info(),
                    started.elapsed().as_secs_f64(),
                ));
                loaded.push((spec, b));
            }
        }
        if let LmData::Prompts(prompts) = &pt.data {
            for (_, b) in &loaded {
                let Some(max) = b.max_positions() else {
                    continue;
                };
                for p in prompts {
                    let n = b.encode(p)?.0.len();
                    if n + lm.max_new_tokens > max {
                        bail!(
                            "{}: a prompt of {n} tokens + {} new tokens exceeds the model's {max} positions; lower --max-new-tokens",
                            b.info().id,
                            lm.max_new_tokens
                        );
                    }
                }
            }
        }
    }
    for (pt, reused) in plan.lm_tasks.iter().zip(reused.iter_mut()) {
        let name = pt.task.name();
        let [(_, tspec), (_, sspec)] = specs(plan, name);
        let Keys {
            teacher: tkey,
            student: skey,
            pair: pair_key,
        } = keys(plan, pt);
        let fidelity_path = cell_path(&plan.out, name, "fidelity");
        let (t, s, fidelity) = match reused.take() {
            Some((t, s, f)) => {
                say(format!(
                    "{name}: reusing the finished cells in {}",
                    plan.out.display()
                ));
                (t, s, f)
            }
            _ => {
                let get =
                    |spec: &DecoderSpec| &loaded.iter().find(|(s, _)| s == spec).expect("loaded").1;
                let (teacher, student) = (get(&tspec), get(&sspec));
                std::fs::create_dir_all(plan.out.join("cells"))?;
                // Score teacher then student, saving each cell as soon as it is done.
                let both =
                    |score: &mut dyn FnMut(Role, &DecoderBackend, String) -> Result<LmCellFile>| {
                        let mut cells = Vec::with_capacity(2);
                        for (role, model, key) in [
                            (Role::Teacher, teacher, &tkey),
                            (Role::Student, student, &skey),
                        ] {
                            let cf = score(role, model, key.clone())?;
                            let path = cell_path(&plan.out, name, role.name());
                            reports::io::write_json_atomic(&path, &cf)?;
                            cells.push(cf);
                        }
                        let s = cells.pop().expect("student");
                        Ok::<_, anyhow::Error>((cells.pop().expect("teacher"), s))
                    };
                let (t, s, fidelity) = match (&pt.data, pt.task.kind()) {
                    (LmData::Text(text), LmKind::Perplexity) => {
                        let span = eval_span(text, teacher, lm)?;
                        let context = context_length(lm, teacher, student);
                        let window = WindowSettings {
                            context,
                            stride: lm.stride.min(context),
                        };
                        let (t, s) = both(&mut |role, model, key| {
                            say(format!(
                                "{} {name}: perplexity over {} words in windows of {} tokens (stride {})",
                                role.name(),
                                span.words,
                                window.context,
                                window.stride
                            ));
                            let cf = perplexity_cell(model, &span, window, plan, meter, key)?;
                            say(format!(
                                "{} {name}: perplexity {:.3}, word perplexity {:.3}, bits per byte {:.4} ({:.1} s)",
                                role.name(),
                                cf.cell.metrics["perplexity"],
                                cf.cell.metrics["word_perplexity"],
                                cf.cell.metrics["bits_per_byte"],
                                cf.cell.elapsed_s
                            ));
                            Ok(cf)
                        })?;
                        let f = perplexity_fidelity(teacher, student, &span, context, lm)?;
                        (t, s, f)
                    }
                    (LmData::Prompts(prompts), LmKind::Generate) => {
                        let (t, s) = both(&mut |role, model, key| {
                            let cf = generate_cell(model, prompts, plan, meter, key)?;
                            if let Some(p) = &cf.cell.profile {
                                say(format!(
                                    "{} {name}: {} prompts, time to first token {:.1} ms, {:.1} decode tokens/s",
                                    role.name(),
                                    prompts.len(),
                                    p.ttft_ms.unwrap_or(f64::NAN),
                                    p.decode_tokens_per_s.unwrap_or(f64::NAN)
                                ));
                            }
                            Ok(cf)
                        })?;
                        let f = generate_fidelity(teacher.same_tokenizer(student), &t, &s);
                        (t, s, f)
                    }
                    _ => bail!("{name}: its data does not match its kind"),
                };
                // Only a computed comparison is written; a reused one is already on disk.
                reports::io::write_json_atomic(
                    &fidelity_path,
                    &FidelityFile {
                        cache_key: pair_key,
                        fidelity: fidelity.clone(),
                    },
                )?;
                (t, s, fidelity)
            }
        };
        if pt.task.kind() == LmKind::Generate {
            write_continuations(&plan.out, name, &t, &s)?;
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
