//! One language-modelling cell: a model's perplexity or generation pass under the profiler's
//! probes, and the pieces of the teacher-student comparison each model's pass leaves.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use reports::{Cell, Mode, Profile, TokenFidelity};
use serde::{Deserialize, Serialize};
use tasks::generation::fidelity::TokenFidelity as FidelitySum;
use tasks::generation::perplexity::WindowSettings;
use tasks::generation::tasks::{continuation_match, generation_metrics, perplexity_metrics};
use tasks::generation::wikitext::RawText;
use tasks::request::Request;

use crate::models::Backend;
use crate::plan::RunPlan;
use crate::profile::probe::{Region, RegionFigures};
use crate::profile::{energy::EnergyMeter, latency};

/// A finished language-modelling cell as saved on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LmCellFile {
    pub cell: Cell,
    /// `generate`: each prompt's continuation.
    #[serde(default)]
    pub continuations: Vec<SavedContinuation>,
    /// Multiple-choice and cloze tasks: each example's log-likelihoods, for the paired
    /// statistics and the predictions file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<tasks::choice::DocAnswer>,
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
pub(super) struct FidelityFile {
    pub cache_key: String,
    /// Token-level fidelity (perplexity and generation tasks).
    #[serde(default)]
    pub fidelity: Option<TokenFidelity>,
}

pub(super) struct Timed {
    pub latencies_ms: Vec<f64>,
    pub figures: RegionFigures,
}

/// Run `f` under the profiler's probes (time, peak memory, energy).
pub(super) fn measured<T>(
    meter: &EnergyMeter,
    f: impl FnOnce(&mut Vec<f64>) -> Result<T>,
) -> Result<(T, Timed)> {
    let mut latencies_ms = Vec::new();
    let region = Region::start(meter);
    let out = f(&mut latencies_ms)?;
    let figures = region.stop();
    Ok((
        out,
        Timed {
            latencies_ms,
            figures,
        },
    ))
}

pub(super) fn profile_of(
    t: &Timed,
    items: usize,
    tokens: usize,
    flops_per_item: f64,
) -> Result<Profile> {
    let lat = latency::summarise(&t.latencies_ms).context("nothing was timed")?;
    let total_s = t.figures.seconds;
    let energy = &t.figures.energy;
    let per_item = energy.value.map(|j| j / items as f64);
    Ok(Profile {
        batch1_pass_s: total_s,
        batch1_examples: items,
        latency_ms: lat,
        forward_latency_ms: None,
        latency_samples_ms: latency::samples(&t.latencies_ms),
        throughput_batch_size: None,
        throughput_laps_per_s: Vec::new(),
        throughput_per_s: items as f64 / total_s,
        tokens_per_s: tokens as f64 / total_s,
        throughput_iterations: None,
        throughput_s: None,
        warmup_iterations: 1,
        peak_rss_bytes: t.figures.peak_rss.value.map(|b| b as u64),
        peak_rss_scope: t.figures.peak_rss.detail.clone(),
        peak_device_memory_bytes: None,
        load_rss_bytes: None,
        energy_j: energy.value,
        energy_j_per_example: per_item,
        energy_j_per_1k: per_item.map(|j| j * 1000.0),
        energy_source: energy.source.label().to_string(),
        energy_detail: energy.detail.clone(),
        flops_per_example: flops_per_item,
        mean_tokens_per_example: tokens as f64 / items as f64,
        ttft_ms: None,
        decode_tokens_per_s: None,
    })
}

/// Perplexity of one model over the evaluated span (a rolling log-likelihood request).
pub(super) fn perplexity_cell(
    model: &dyn Backend,
    task: &str,
    span: &RawText,
    window: WindowSettings,
    plan: &RunPlan,
    meter: &EnergyMeter,
    key: String,
) -> Result<LmCellFile> {
    let started = Instant::now();
    // One untimed window first, so that the timed pass starts warm.
    if plan.profile.is_some() {
        let (ids, _) = model.tokenize(&span.text)?;
        model.window_logits(&ids[..ids.len().min(window.context)])?;
    }
    let spinner = crate::progress::spinner(
        crate::progress::wanted(plan.quiet),
        &format!("{task}: perplexity of {}", model.info().id),
    );
    let measured_pass = measured(meter, |lat| {
        let r = model
            .run(
                task,
                Request::LogLikelihoodRolling {
                    text: &span.text,
                    window,
                },
            )?
            .into_rolling()
            .map_err(anyhow::Error::msg)?;
        lat.extend_from_slice(&r.window_ms);
        Ok(r)
    });
    spinner.finish_and_clear();
    let (rolling, timed) = measured_pass?;
    let nll = rolling.nll;
    let tokens_run = rolling.tokens_run;
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
            scored_by: None,
        },
        continuations: Vec::new(),
        answers: Vec::new(),
    })
}

/// Greedy continuations of every prompt by one model (a generate request per prompt, so that
/// each is timed).
pub(super) fn generate_cell(
    model: &dyn Backend,
    task: &str,
    prompts: &[String],
    plan: &RunPlan,
    meter: &EnergyMeter,
    key: String,
) -> Result<LmCellFile> {
    let started = Instant::now();
    let n = plan.lm.max_new_tokens;
    let generate = |prompt: &[String], n: usize| -> Result<tasks::request::Generation> {
        let mut g = model
            .run(
                task,
                Request::Generate {
                    prompts: prompt,
                    max_new_tokens: n,
                },
            )?
            .into_generations()
            .map_err(anyhow::Error::msg)?;
        g.pop().context("the model answered no generation")
    };
    if plan.profile.is_some() {
        generate(&prompts[..1], n.min(4))?;
    }
    let (outs, timed) = measured(meter, |lat| {
        let mut outs = Vec::with_capacity(prompts.len());
        for p in prompts {
            let t0 = Instant::now();
            let c = generate(std::slice::from_ref(p), n)?;
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
            scored_by: None,
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
        answers: Vec::new(),
    })
}

/// The teacher's half of token-level fidelity: its logits at every position of the first
/// `--fidelity-tokens` tokens (disjoint windows of `context`), spilled to a file beside the
/// cells. Both distributions are needed at every position, and the vocabulary x positions of
/// them are too large to hold while the student runs (about 0.8 GB for SmolLM2 at 4,096
/// tokens), so the student reads them back window by window instead: the teacher can be
/// dropped first, and each model's memory is its own.
pub(super) struct TeacherLogits {
    pub ids: Vec<u32>,
    pub context: usize,
    pub path: PathBuf,
    /// Logits per position (the teacher's output width, which may be padded past its
    /// tokenizer's vocabulary).
    pub width: usize,
}

impl TeacherLogits {
    pub fn spill(
        teacher: &dyn Backend,
        span: &RawText,
        context: usize,
        fidelity_tokens: usize,
        path: PathBuf,
    ) -> Result<Self> {
        let (ids, _) = teacher.tokenize(&span.text)?;
        let ids = ids[..ids.len().min(fidelity_tokens)].to_vec();
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let mut out = BufWriter::new(file);
        let mut width = 0;
        for chunk in ids.chunks(context) {
            for row in teacher.window_logits(chunk)? {
                width = row.len();
                for v in row {
                    out.write_all(&v.to_le_bytes())?;
                }
            }
        }
        out.flush()?;
        Ok(TeacherLogits {
            ids,
            context,
            path,
            width,
        })
    }

    /// The student's half: its logits at the same positions against the teacher's, read
    /// back in the order they were written (when both models tokenize alike). The spill file
    /// is removed afterwards.
    pub fn compare(self, student: &dyn Backend, same_tokenizer: bool) -> Result<TokenFidelity> {
        if !same_tokenizer {
            let _ = std::fs::remove_file(&self.path);
            return Ok(TokenFidelity {
                same_tokenizer: false,
                positions: 0,
                kl: None,
                top1_agreement: None,
                greedy_token_match: None,
                greedy_exact_match: None,
                kl_stats: None,
                note: "the tokenizers differ: token-level figures are undefined; compare word perplexity and bits per byte".into(),
            });
        }
        let file = std::fs::File::open(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let mut input = BufReader::new(file);
        let mut sum = FidelitySum::default();
        let mut bytes = vec![0u8; self.width * 4];
        // Models that share a tokenizer can pad their output layers to different widths
        // (Qwen2.5 0.5B has 151,936 logits, 7B 152,064): the distributions are compared over
        // the logits both have, which hold every id the tokenizer gives.
        let mut student_width = None;
        for chunk in self.ids.chunks(self.context) {
            for (j, s) in student.window_logits(chunk)?.into_iter().enumerate() {
                input.read_exact(&mut bytes).with_context(|| {
                    format!("{}: the teacher's logits end early", self.path.display())
                })?;
                let t: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let w = t.len().min(s.len());
                let target = chunk.get(j + 1).copied();
                if target.is_some_and(|id| id as usize >= w) {
                    anyhow::bail!("token id {} is past the {w} logits both models have; the tokenizers cannot be the same", target.unwrap_or_default());
                }
                student_width = Some(s.len());
                sum.add_position(&t[..w], &s[..w], target)
                    .map_err(anyhow::Error::msg)?;
            }
            sum.end_window();
        }
        let padded = match student_width {
            Some(sw) if sw != self.width => format!(
                "; output layers padded to different widths, compared over the first {} logits",
                sw.min(self.width)
            ),
            _ => String::new(),
        };
        let kl_stats = sum.stats().map(|k| reports::KlStats {
            kl_mean: k.kl_mean,
            kl_stderr: k.kl_stderr.is_finite().then_some(k.kl_stderr),
            kl_percentiles: k
                .kl_percentiles
                .into_iter()
                .map(|(label, kl)| reports::KlPercentile { label, kl })
                .collect(),
            same_top: k.same_top,
            same_top_stderr: k.same_top_stderr,
            delta_p_target_mean: k
                .delta_p_target_mean
                .is_finite()
                .then_some(k.delta_p_target_mean),
            delta_p_target_stderr: k
                .delta_p_target_stderr
                .is_finite()
                .then_some(k.delta_p_target_stderr),
            delta_p_target_rms: k
                .delta_p_target_rms
                .is_finite()
                .then_some(k.delta_p_target_rms),
            delta_p_top_mean: k.delta_p_top_mean,
            delta_p_top_rms: k.delta_p_top_rms,
            ln_ppl_correlation: k.ln_ppl_correlation,
            ppl_ratio: k.ppl_ratio,
            windows: k.windows,
        });
        let _ = std::fs::remove_file(&self.path);
        Ok(TokenFidelity {
            same_tokenizer: true,
            positions: sum.positions,
            kl: Some(sum.mean_kl()),
            top1_agreement: Some(sum.top1_agreement()),
            greedy_token_match: None,
            greedy_exact_match: None,
            kl_stats,
            note: format!(
                "every position of the first {} tokens, in disjoint windows of {}{padded}",
                sum.positions, self.context
            ),
        })
    }
}

/// Where a task's spilled teacher logits go.
pub(super) fn spill_path(out: &Path, task: &str) -> PathBuf {
    out.join("cells").join(format!("{task}.teacher-logits.tmp"))
}

pub(super) fn generate_fidelity(
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
            kl_stats: None,
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
            kl_stats: None,
            note: "the tokenizers differ: continuations compared as text only".into(),
        }
    }
}

pub(super) fn write_continuations(
    out: &Path,
    task: &str,
    t: &LmCellFile,
    s: &LmCellFile,
) -> Result<()> {
    let lines = t
        .continuations
        .iter()
        .zip(&s.continuations)
        .enumerate()
        .map(|(i, (a, b))| {
            serde_json::json!({
                "id": i.to_string(),
                "prompt": a.prompt,
                "teacher": a.text,
                "student": b.text,
            })
        });
    crate::cells::write_predictions_file(out, task, lines)
}
