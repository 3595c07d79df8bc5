//! One multiple-choice or cloze cell (a model's log-likelihood of every choice of every
//! example, under the profiler's probes), and teacher against student on such a task: the
//! paired bootstrap interval of the accuracy difference, McNemar's test, how often both pick
//! the same choice, KL between their choice distributions, calibration, and the first
//! examples they answer differently.

use std::time::Instant;

use anyhow::{Context, Result};
use reports::stats::{
    brier_score, expected_calibration_error, kl_divergence, mcnemar_exact, paired_bootstrap_each,
};
use reports::{Calibration, Cell, Comparison, Disagreement, Mode};
use tasks::choice::{self, ChoiceSet, DocAnswer, Scoring};
use tasks::request::Request;

use super::cells::{profile_of, LmCellFile, Timed};
use crate::fidelity::{RESAMPLES, SEED, SHOW_DISAGREEMENTS};
use crate::models::Backend;
use crate::plan::RunPlan;
use crate::profile::energy::EnergyMeter;
use crate::profile::probe::{Figure, Region, RegionFigures, Source};

/// How often a multiple-choice cell saves what it has finished (seconds): a full MMLU cell
/// takes an hour or more, and an interrupted run resumes from the last save instead of the
/// cell's first example. `HARNESS_CHECKPOINT_S` overrides it (0: after every example).
const CHECKPOINT_EVERY_S: f64 = 60.0;

fn checkpoint_every_s() -> f64 {
    std::env::var("HARNESS_CHECKPOINT_S")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(CHECKPOINT_EVERY_S)
}

/// A multiple-choice cell's progress, `OUT/cells/<task>.<role>.partial.json`: the answers so
/// far with their latencies and the measured figures of the time they took. Read back only
/// under the same cache key (same model, task version, data and settings); removed once the
/// cell is written.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct ChoiceProgress {
    pub cache_key: String,
    pub answers: Vec<DocAnswer>,
    pub latencies_ms: Vec<f64>,
    /// Measured seconds, joules (when energy is read or estimated) and peak RSS bytes of
    /// the timed pass so far.
    pub seconds: f64,
    pub energy_j: Option<f64>,
    pub peak_rss_bytes: Option<f64>,
    /// Wall seconds of the cell so far, set-up included.
    pub elapsed_s: f64,
}

/// The measured pass of a cell as segments between checkpoints: seconds and joules add up,
/// the peak is the largest; the labels are the last segment's.
struct Segments {
    seconds: f64,
    energy_j: Option<f64>,
    peak_rss: Option<f64>,
    last: Option<RegionFigures>,
}

impl Segments {
    fn from(progress: Option<&ChoiceProgress>) -> Self {
        Segments {
            seconds: progress.map_or(0.0, |p| p.seconds),
            energy_j: progress.map_or(Some(0.0), |p| p.energy_j),
            peak_rss: progress.and_then(|p| p.peak_rss_bytes),
            last: None,
        }
    }

    fn add(&mut self, f: RegionFigures) {
        self.seconds += f.seconds;
        self.energy_j = match (self.energy_j, f.energy.value) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.peak_rss = match (self.peak_rss, f.peak_rss.value) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.last = Some(f);
    }

    fn figures(self) -> RegionFigures {
        let last = self.last.expect("at least one segment");
        let with = |f: Figure, value: Option<f64>| Figure {
            value,
            source: if value.is_some() {
                f.source
            } else {
                Source::Missing
            },
            ..f
        };
        RegionFigures {
            seconds: self.seconds,
            energy: with(last.energy, self.energy_j),
            peak_rss: with(last.peak_rss, self.peak_rss),
        }
    }
}

/// Every example's log-likelihoods by one model, one request batch per example (so each is
/// timed), with a progress line every tenth of the set.
#[allow(clippy::too_many_arguments)]
pub(super) fn choice_cell(
    model: &dyn Backend,
    task: &str,
    set: &ChoiceSet,
    plan: &RunPlan,
    meter: &EnergyMeter,
    key: String,
    role: &str,
    say: &dyn Fn(String),
) -> Result<LmCellFile> {
    let started = Instant::now();
    let partial = crate::cells::cell_path(&plan.out, task, &format!("{role}.partial"));
    let progress: Option<ChoiceProgress> =
        crate::cells::read_cached(&partial, &key, |p: &ChoiceProgress| &p.cache_key).filter(|p| {
            p.answers.len() <= set.docs.len() && p.answers.len() == p.latencies_ms.len()
        });
    let ask = |doc: &choice::ChoiceDoc| -> Result<DocAnswer> {
        let lls = model
            .run(
                task,
                Request::LogLikelihood {
                    pairs: &doc.requests,
                    batch_size: plan.batch_size,
                },
            )?
            .into_loglikelihoods()
            .map_err(anyhow::Error::msg)?;
        if lls.len() != doc.requests.len() {
            anyhow::bail!(
                "{}: {} answers for {} requests",
                model.info().id,
                lls.len(),
                doc.requests.len()
            );
        }
        Ok(DocAnswer::from_loglikelihoods(&lls))
    };
    if plan.profile.is_some() {
        ask(&set.docs[0])?;
    }
    let n = set.docs.len();
    let step = (n / 10).max(1);
    let bar = crate::progress::bar(
        crate::progress::wanted(plan.quiet),
        n as u64,
        &format!("{role} {task}"),
    );
    let resumed = progress.as_ref().map_or(0, |p| p.answers.len());
    let earlier_s = progress.as_ref().map_or(0.0, |p| p.elapsed_s);
    if resumed > 0 {
        say(format!(
            "{role} {task}: resuming after {resumed}/{n} examples from {}",
            partial.display()
        ));
        bar.inc(resumed as u64);
    }
    let mut segments = Segments::from(progress.as_ref());
    let (mut answers, mut latencies_ms) = match progress {
        Some(p) => (p.answers, p.latencies_ms),
        None => (Vec::with_capacity(n), Vec::with_capacity(n)),
    };
    let mut region = Region::start(meter);
    let mut saved = Instant::now();
    let every_s = checkpoint_every_s();
    for (i, doc) in set.docs.iter().enumerate().skip(resumed) {
        let t0 = Instant::now();
        answers.push(ask(doc).with_context(|| format!("{task}: example {}", doc.id))?);
        latencies_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        bar.inc(1);
        if (i + 1) % step == 0 && i + 1 < n {
            say(format!(
                "{role} {task}: {}/{n} examples ({:.0} s)",
                i + 1,
                earlier_s + started.elapsed().as_secs_f64()
            ));
        }
        if saved.elapsed().as_secs_f64() >= every_s && i + 1 < n {
            // Close the measured segment, save, and open the next one.
            segments.add(region.stop());
            let snapshot = ChoiceProgress {
                cache_key: key.clone(),
                answers: answers.clone(),
                latencies_ms: latencies_ms.clone(),
                seconds: segments.seconds,
                energy_j: segments.energy_j,
                peak_rss_bytes: segments.peak_rss,
                elapsed_s: earlier_s + started.elapsed().as_secs_f64(),
            };
            reports::io::write_json_atomic(&partial, &snapshot)
                .with_context(|| format!("cannot save progress to {}", partial.display()))?;
            saved = Instant::now();
            region = Region::start(meter);
        }
    }
    segments.add(region.stop());
    bar.finish_and_clear();
    let timed = Timed {
        latencies_ms,
        figures: segments.figures(),
    };
    let profile = match &plan.profile {
        Some(_) => {
            // Tokens each example runs: its context once and every continuation (counted
            // after the timed pass, so tokenizing twice costs no measured time).
            let mut tokens = 0usize;
            for doc in &set.docs {
                let mut contexts: Vec<&str> =
                    doc.requests.iter().map(|r| r.context.as_str()).collect();
                contexts.dedup();
                for c in contexts {
                    tokens += model.tokenize(c)?.0.len();
                }
            }
            let tokens = tokens
                + answers
                    .iter()
                    .map(|a| a.tokens.iter().sum::<usize>())
                    .sum::<usize>();
            Some(profile_of(
                &timed,
                n,
                tokens,
                model.flops_per_token() * tokens as f64 / n as f64,
            )?)
        }
        None => None,
    };
    Ok(LmCellFile {
        cell: Cell {
            checkpoint: model.info().clone(),
            mode: Mode::LogLikelihood,
            metrics: choice::score(set.scoring, &set.docs, &answers),
            n_truncated: 0,
            probe: None,
            elapsed_s: earlier_s + started.elapsed().as_secs_f64(),
            cache_key: key,
            profile,
            scored_by: (resumed > 0).then(|| {
                format!(
                    "batch-1 pass, resumed from a checkpoint after {resumed} of {n} examples (times and energy summed over both processes)"
                )
            }),
        },
        continuations: Vec::new(),
        answers,
    })
}

/// What a model picks for each example under `metric` ([`choice::pick`]).
fn picks(set: &ChoiceSet, answers: &[DocAnswer], metric: &str) -> Vec<usize> {
    set.docs
        .iter()
        .zip(answers)
        .map(|(d, a)| choice::pick(set.scoring, d, a, metric))
        .collect()
}

/// Teacher against student on one multiple-choice or cloze task, example by example.
pub(super) fn compare(
    set: &ChoiceSet,
    primary: &str,
    teacher: &[DocAnswer],
    student: &[DocAnswer],
) -> Comparison {
    let metric = if primary.starts_with("acc") {
        primary
    } else {
        "acc"
    };
    let tc = choice::correct(set.scoring, &set.docs, teacher, metric);
    let sc = choice::correct(set.scoring, &set.docs, student, metric);
    let n = tc.len();
    let mean = |v: &[f64], idx: &[usize]| idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64;
    let intervals = paired_bootstrap_each(n, RESAMPLES, 0.95, SEED, |idx| {
        (mean(&tc, idx), mean(&sc, idx))
    });
    let (mut b, mut c) = (0u64, 0u64);
    for (t, s) in tc.iter().zip(&sc) {
        match (*t > 0.5, *s > 0.5) {
            (true, false) => b += 1,
            (false, true) => c += 1,
            _ => {}
        }
    }
    let (tp, sp) = (picks(set, teacher, metric), picks(set, student, metric));
    let agree = tp.iter().zip(&sp).filter(|(a, b)| a == b).count();
    let mut disagreements = Vec::new();
    for (i, d) in set.docs.iter().enumerate() {
        if tp[i] != sp[i] && disagreements.len() < SHOW_DISAGREEMENTS {
            let name = |k: usize| match set.scoring {
                Scoring::Cloze => if k == 1 { "greedy" } else { "not greedy" }.to_string(),
                _ => d.choices.get(k).cloned().unwrap_or_default(),
            };
            disagreements.push(Disagreement {
                id: d.id.clone(),
                text_a: d.summary(),
                text_b: None,
                gold: match set.scoring {
                    Scoring::Cloze => d.choices[0].clone(),
                    _ => name(d.gold),
                },
                teacher: name(tp[i]),
                student: name(sp[i]),
            });
        }
    }
    let multiple = matches!(set.scoring, Scoring::MultipleChoice { .. });
    let probs = |answers: &[DocAnswer]| -> Vec<Vec<f64>> {
        answers.iter().map(choice::choice_probs).collect()
    };
    let (pt, ps) = (probs(teacher), probs(student));
    let gold: Vec<usize> = set.docs.iter().map(|d| d.gold).collect();
    let calibration = |p: &[Vec<f64>], answers: &[DocAnswer]| {
        let conf: Vec<f64> = p
            .iter()
            .map(|q| q.iter().cloned().fold(0.0, f64::max))
            .collect();
        let ok: Vec<bool> = set
            .docs
            .iter()
            .zip(answers)
            .map(|(d, a)| choice::picks(d, a).raw == d.gold)
            .collect();
        Calibration {
            ece: expected_calibration_error(&conf, &ok, 15),
            brier: brier_score(p, &gold),
        }
    };
    Comparison {
        primary_diff: intervals.diff,
        teacher_interval: Some(intervals.teacher),
        student_interval: Some(intervals.student),
        teacher_only_correct: Some(b),
        student_only_correct: Some(c),
        mcnemar_p: Some(mcnemar_exact(b, c)),
        top1_agreement: Some(agree as f64 / n as f64),
        mean_kl: multiple.then(|| {
            pt.iter()
                .zip(&ps)
                .map(|(p, q)| kl_divergence(p, q))
                .sum::<f64>()
                / n as f64
        }),
        confusion: None,
        disagreements,
        teacher_calibration: multiple.then(|| calibration(&pt, teacher)),
        student_calibration: multiple.then(|| calibration(&ps, student)),
    }
}

/// `OUT/predictions/<task>.jsonl`: per example, the gold choice and each model's
/// log-likelihoods and pick, so a user can look at where the two differ.
pub(super) fn write_predictions(
    out: &std::path::Path,
    task: &str,
    set: &ChoiceSet,
    teacher: &LmCellFile,
    student: &LmCellFile,
) -> Result<()> {
    let lines = set
        .docs
        .iter()
        .zip(teacher.answers.iter().zip(&student.answers))
        .map(|(d, (t, s))| {
            serde_json::json!({
                "id": d.id,
                "gold": d.gold,
                "teacher_logprobs": t.logprobs,
                "student_logprobs": s.logprobs,
                "teacher_pick": choice::picks(d, t).raw,
                "student_pick": choice::picks(d, s).raw,
            })
        });
    crate::cells::write_predictions_file(out, task, lines)
}
