//! The tables every human-readable format shows, built once from a results file: scores
//! (the DistilBERT paper's Table 1), cost (its Table 3), and teacher-against-student
//! statistics. Formats only lay them out (Markdown pipes, HTML cells).

use super::table::Align;
use super::{percent, points};
use crate::Results;

/// A table: column headers, their alignment and the cell texts.
pub struct TableView {
    pub headers: Vec<String>,
    pub align: Vec<Align>,
    pub rows: Vec<Vec<String>>,
}

fn strings(headers: &[&str]) -> Vec<String> {
    headers.iter().map(|h| h.to_string()).collect()
}

/// Per task, the primary metric x100 for teacher and student and the retention, then the
/// macro score labelled `macro_label`.
pub fn scores(r: &Results, macro_label: &str) -> TableView {
    let mut rows: Vec<Vec<String>> = r
        .tasks
        .iter()
        .map(|(name, t)| {
            let (teacher, student) = t.primary();
            // Quality scores are fractions shown x100; perplexities and counts as they are.
            let shown = |v: f64| {
                if t.in_macro() {
                    points(v)
                } else {
                    format!("{v:.3}")
                }
            };
            vec![
                name.clone(),
                t.mode.clone(),
                t.primary_metric.clone(),
                t.n_examples.to_string(),
                shown(teacher),
                shown(student),
                percent(t.retention),
            ]
        })
        .collect();
    if let Some(m) = &r.macro_score {
        rows.push(vec![
            macro_label.to_string(),
            String::new(),
            String::new(),
            String::new(),
            points(m.teacher),
            points(m.student),
            percent(m.retention),
        ]);
    }
    use Align::*;
    TableView {
        headers: strings(&[
            "task",
            "mode",
            "metric",
            "n",
            "teacher",
            "student",
            "retention",
        ]),
        align: vec![Left, Left, Left, Right, Right, Right, Right],
        rows,
    }
}

/// A throughput pass's examples/s, with the range of its laps when it ran more than one
/// (`250.2 (245.1-252.7)`), so a difference can be read against the run's own noise.
fn throughput_with_laps(p: &crate::Profile) -> String {
    let rate = format!("{:.1}", p.throughput_per_s);
    match crate::schema::lap_range(&p.throughput_laps_per_s) {
        Some((lo, hi)) => format!("{rate} ({lo:.1}-{hi:.1})"),
        None => rate,
    }
}

/// What each model costs per task, and the student's speedup; `None` without profiles.
pub fn costs(r: &Results) -> Option<TableView> {
    let mut rows = Vec::new();
    for (name, t) in &r.tasks {
        for (role, cell) in [("teacher", &t.teacher), ("student", &t.student)] {
            let Some(p) = &cell.profile else { continue };
            rows.push(vec![
                name.clone(),
                role.to_string(),
                format!("{:.1}", cell.checkpoint.parameters as f64 / 1e6),
                format!(
                    "{:.1}",
                    cell.checkpoint
                        .weight_bytes
                        .unwrap_or(cell.checkpoint.bytes_on_disk) as f64
                        / 1e6
                ),
                format!("{:.1}", p.batch1_pass_s),
                format!("{:.2}", p.latency_ms.p50),
                format!("{:.2}", p.latency_ms.p99),
                throughput_with_laps(p),
                p.peak_rss_bytes.map_or("n/a".into(), |b| {
                    format!("{:.0}", b as f64 / (1u64 << 20) as f64)
                }),
                match p.energy_j_per_1k {
                    Some(j) => format!("{j:.0} ({})", p.energy_source),
                    None => format!("n/a ({})", p.energy_source),
                },
                if role == "student" {
                    t.speedup.map_or("n/a".into(), |s| format!("{s:.2}x"))
                } else {
                    String::new()
                },
            ]);
        }
    }
    use Align::*;
    (!rows.is_empty()).then(|| TableView {
        headers: strings(&[
            "task",
            "model",
            "params (M)",
            "size (MB)",
            "batch-1 pass (s)",
            "p50 (ms)",
            "p99 (ms)",
            "examples/s",
            "peak RSS (MiB)",
            "J / 1k examples",
            "speedup",
        ]),
        align: vec![
            Left, Left, Right, Right, Right, Right, Right, Right, Right, Right, Right,
        ],
        rows,
    })
}

/// The LLM accuracy table in the DistilBERT paper's style: per multiple-choice or cloze task
/// (a task whose cells report `acc_stderr`), teacher and student `acc` and `acc_norm` x100
/// with their standard errors and the retention on the primary metric, then the macro over
/// those tasks; `None` when no such task ran.
pub fn llm_accuracy(r: &Results) -> Option<TableView> {
    let with_se = |m: &std::collections::BTreeMap<String, f64>, k: &str| match m.get(k) {
        Some(v) => {
            let se = m.get(&format!("{k}_stderr")).copied().unwrap_or(f64::NAN);
            if se.is_finite() {
                format!("{:.2} ± {:.2}", v * 100.0, se * 100.0)
            } else {
                format!("{:.2}", v * 100.0)
            }
        }
        None => String::new(),
    };
    let mut rows = Vec::new();
    let (mut tsum, mut ssum) = (0.0, 0.0);
    for (name, t) in &r.tasks {
        if t.mode != "log_likelihood" || !t.teacher.metrics.contains_key("acc") {
            continue;
        }
        let (tp, sp) = t.primary();
        tsum += tp;
        ssum += sp;
        rows.push(vec![
            name.clone(),
            t.n_examples.to_string(),
            t.primary_metric.clone(),
            with_se(&t.teacher.metrics, "acc"),
            with_se(&t.student.metrics, "acc"),
            with_se(&t.teacher.metrics, "acc_norm"),
            with_se(&t.student.metrics, "acc_norm"),
            percent(t.retention),
        ]);
    }
    if rows.len() > 1 {
        let n = rows.len() as f64;
        rows.push(vec![
            "macro (primary)".into(),
            String::new(),
            String::new(),
            points(tsum / n),
            points(ssum / n),
            String::new(),
            String::new(),
            percent(crate::schema::retention(tsum / n, ssum / n)),
        ]);
    }
    use Align::*;
    (!rows.is_empty()).then(|| TableView {
        headers: strings(&[
            "task",
            "n",
            "primary",
            "teacher acc",
            "student acc",
            "teacher acc_norm",
            "student acc_norm",
            "retention",
        ]),
        align: vec![Left, Right, Left, Right, Right, Right, Right, Right],
        rows,
    })
}

/// Explains the LLM accuracy table.
pub const LLM_ACCURACY_NOTE: &str = "Zero-shot log-likelihood scoring as lm-evaluation-harness defines it: acc picks the choice with the highest summed log-probability, acc_norm divides it by the choice's length in characters; ± is the standard error over examples. Retention is on the primary metric (acc_norm where the task defines it). The macro row averages the primary metrics of these tasks (the first table's macro is over every task).";

/// Language modelling per task and model: perplexities, and generation speed; `None` when no
/// language-modelling task ran.
pub fn language_modelling(r: &Results) -> Option<TableView> {
    let mut rows = Vec::new();
    let num = |v: Option<f64>, digits: usize| v.map_or(String::new(), |v| format!("{v:.digits$}"));
    for (name, t) in &r.tasks {
        if t.in_macro() {
            continue;
        }
        for (role, cell) in [("teacher", &t.teacher), ("student", &t.student)] {
            let m = |k: &str| cell.metrics.get(k).copied();
            let p = cell.profile.as_ref();
            rows.push(vec![
                name.clone(),
                role.to_string(),
                cell.checkpoint
                    .quantization
                    .clone()
                    .unwrap_or_else(|| "f32".into()),
                num(m("perplexity"), 3),
                num(m("word_perplexity"), 3),
                num(m("bits_per_byte"), 4),
                num(p.and_then(|p| p.ttft_ms), 1),
                num(p.and_then(|p| p.decode_tokens_per_s), 1),
                num(p.map(|p| p.tokens_per_s), 1),
            ]);
        }
    }
    use Align::*;
    (!rows.is_empty()).then(|| TableView {
        headers: strings(&[
            "task",
            "model",
            "weights",
            "perplexity",
            "word ppl",
            "bits/byte",
            "TTFT (ms)",
            "decode tok/s",
            "tokens/s",
        ]),
        align: vec![Left, Left, Left, Right, Right, Right, Right, Right, Right],
        rows,
    })
}

/// How closely a causal LM student follows its teacher; `None` when no task measured it.
pub fn token_fidelity(r: &Results) -> Option<TableView> {
    let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.2}%", v * 100.0));
    let rows: Vec<Vec<String>> = r
        .tasks
        .iter()
        .filter_map(|(name, t)| {
            let f = t.fidelity.as_ref()?;
            Some(vec![
                name.clone(),
                if f.same_tokenizer { "yes" } else { "no" }.to_string(),
                f.positions.to_string(),
                f.kl.map_or("n/a".into(), |v| format!("{v:.5}")),
                pct(f.top1_agreement),
                pct(f.greedy_token_match),
                pct(f.greedy_exact_match),
            ])
        })
        .collect();
    use Align::*;
    (!rows.is_empty()).then(|| TableView {
        headers: strings(&[
            "task",
            "same tokenizer",
            "positions",
            "KL(t||s) nats",
            "top-1 agreement",
            "greedy token match",
            "greedy exact match",
        ]),
        align: vec![Left, Left, Right, Right, Right, Right, Right],
        rows,
    })
}

/// Token fidelity as llama.cpp's `llama-perplexity --kl-divergence` reports it, per task that
/// measured it; `None` when none did.
pub fn kl_statistics(r: &Results) -> Option<TableView> {
    let f = |v: f64, d: usize| format!("{v:.d$}");
    let opt = |v: Option<f64>, d: usize| v.map_or("n/a".to_string(), |v| f(v, d));
    let rows: Vec<Vec<String>> = r
        .tasks
        .iter()
        .filter_map(|(name, t)| {
            let k = t.fidelity.as_ref()?.kl_stats.as_ref()?;
            let pct = |label: &str| {
                k.kl_percentiles
                    .iter()
                    .find(|p| p.label == label)
                    .map_or("n/a".to_string(), |p| f(p.kl, 5))
            };
            Some(vec![
                name.clone(),
                match k.kl_stderr {
                    Some(se) => format!("{:.5} ± {:.5}", k.kl_mean, se),
                    None => f(k.kl_mean, 5),
                },
                pct("median"),
                pct("99%"),
                pct("99.9%"),
                pct("max"),
                format!(
                    "{:.2} ± {:.2}%",
                    k.same_top * 100.0,
                    k.same_top_stderr * 100.0
                ),
                match (k.delta_p_target_mean, k.delta_p_target_stderr) {
                    (Some(m), Some(se)) => format!("{:+.3} ± {:.3}%", m * 100.0, se * 100.0),
                    (Some(m), None) => format!("{:+.3}%", m * 100.0),
                    _ => "n/a".into(),
                },
                k.delta_p_target_rms
                    .map_or("n/a".into(), |v| format!("{:.3}%", v * 100.0)),
                opt(k.ln_ppl_correlation, 4),
                opt(k.ppl_ratio, 4),
            ])
        })
        .collect();
    use Align::*;
    (!rows.is_empty()).then(|| TableView {
        headers: strings(&[
            "task",
            "mean KL",
            "median KL",
            "KL 99%",
            "KL 99.9%",
            "max KL",
            "same top p",
            "mean Δp",
            "RMS Δp",
            "cor(ln PPL)",
            "PPL(s)/PPL(t)",
        ]),
        align: vec![
            Left, Right, Right, Right, Right, Right, Right, Right, Right, Right, Right,
        ],
        rows,
    })
}

/// Explains the llama.cpp-style table.
pub const KL_NOTE: &str = "As llama-perplexity --kl-divergence reports it, over the same positions: KL(teacher || student) in nats with its standard error and percentiles (all eleven in results.json); same top p: both models' most likely next token agree (± binomial standard error); Δp: p_student - p_teacher of the actual next token; cor(ln PPL): correlation of the two models' per-window ln perplexity; PPL(s)/PPL(t) over the same next tokens.";

/// Explains the language-modelling tables.
pub const LM_NOTE: &str = "Perplexity: sliding windows over the text (settings.lm); word perplexity and bits per byte compare across tokenizers. TTFT: prompt tokenised, prompt forward and first token picked; decode tok/s: each later token through the KV cache. KL and top-1 agreement are measured at every position of the text's first settings.lm.fidelity_tokens tokens.";

/// Explains the cost table.
pub const COST_NOTE: &str = "Batch-1 pass: one pass over the dev set at batch size 1 (the DistilBERT paper's protocol); speedup is the teacher's time over the student's. Energy says where it came from (rapl: measured; estimated: CPU time x watts per core).";

/// Paired statistics and fidelity per task; `None` when no task has a comparison.
pub fn paired(r: &Results) -> Option<TableView> {
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"));
    let pair = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{a:.3} / {b:.3}"),
        _ => "n/a".into(),
    };
    let mut rows = Vec::new();
    for (name, t) in &r.tasks {
        let Some(c) = &t.comparison else { continue };
        let d = &c.primary_diff;
        let (tc, sc) = (
            c.teacher_calibration.as_ref(),
            c.student_calibration.as_ref(),
        );
        rows.push(vec![
            name.clone(),
            format!(
                "{:+.2} [{:+.2}, {:+.2}]",
                d.estimate * 100.0,
                d.low * 100.0,
                d.high * 100.0
            ),
            opt(c.mcnemar_p, 3),
            c.top1_agreement
                .map_or("n/a".into(), |a| format!("{:.1}%", a * 100.0)),
            opt(c.mean_kl, 4),
            pair(tc.map(|c| c.ece), sc.map(|c| c.ece)),
            pair(tc.map(|c| c.brier), sc.map(|c| c.brier)),
        ]);
    }
    use Align::*;
    (!rows.is_empty()).then(|| TableView {
        headers: strings(&[
            "task",
            "student - teacher (pts, 95% CI)",
            "McNemar p",
            "top-1 agreement",
            "KL(t||s)",
            "ECE t / s",
            "Brier t / s",
        ]),
        align: vec![Left, Right, Right, Right, Right, Right, Right],
        rows,
    })
}

/// Explains the paired table.
pub const PAIRED_NOTE: &str = "Paired bootstrap over examples (1,000 resamples, seed 42); McNemar's exact test on the examples only one model gets right; KL is the distillation loss over the output distributions.";

/// The first `per_task` disagreements of each task, as plain sentences.
pub fn disagreements(r: &Results, per_task: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (name, t) in &r.tasks {
        let Some(c) = &t.comparison else { continue };
        for d in c.disagreements.iter().take(per_task) {
            let text = match &d.text_b {
                Some(b) => format!("{} / {}", d.text_a, b),
                None => d.text_a.clone(),
            };
            out.push(format!(
                "{name} #{}: gold {}, teacher {}, student {}: \"{}\"",
                d.id, d.gold, d.teacher, d.student, text
            ));
        }
    }
    out
}

/// Where a merged file's figures come from, in sentences: its inputs, the cells no input had
/// and, when the inputs ran on different machines, that speed figures mix hosts. `None` for
/// the file of one run.
pub fn provenance(r: &Results) -> Option<String> {
    let m = r.merge.as_ref()?;
    let shards: Vec<&str> = m.inputs.iter().filter_map(|i| i.shard.as_deref()).collect();
    let mut out = if shards.is_empty() {
        format!("Merged from {} runs.", m.inputs.len())
    } else {
        format!(
            "Merged from {} shards ({}).",
            m.inputs.len(),
            shards.join(", ")
        )
    };
    if !m.missing_cells.is_empty() {
        out += &format!(
            " Partial: no input had {} (their tasks are left out).",
            m.missing_cells.join(", ")
        );
    }
    if let Some(why) = &m.mixed_environments {
        out += &format!(
            " Speed figures were measured on several machines ({why}): compare them across tasks and roles with care."
        );
    }
    Some(out)
}

/// One row per model, the teacher first, as the DistilBERT paper's Table 1 with its Table 3's
/// cost columns: size, each task's primary score (x100; perplexity as it is), the macro score
/// and its retention, the batch-1 passes summed over the tasks every model was profiled on,
/// and the speedup over the teacher on those tasks.
pub fn models(r: &Results) -> TableView {
    let pairs = r.pairs();
    let tasks: Vec<&String> = r.tasks.keys().collect();
    let size = |c: &Option<crate::CheckpointInfo>| match c {
        Some(c) => (
            format!("{:.1}", c.parameters as f64 / 1e6),
            format!(
                "{:.1}",
                c.weight_bytes.unwrap_or(c.bytes_on_disk) as f64 / 1e6
            ),
        ),
        None => ("n/a".into(), "n/a".into()),
    };
    // Tasks whose batch-1 pass every model ran: the common ground of the summed time.
    let profiled: Vec<&String> = tasks
        .iter()
        .copied()
        .filter(|t| {
            pairs.iter().all(|p| {
                p.tasks
                    .get(*t)
                    .is_some_and(|r| r.teacher.profile.is_some() && r.student.profile.is_some())
            })
        })
        .collect();
    let pass_s = |cell: &dyn Fn(&crate::TaskResult) -> &crate::Cell, p: &Results| -> f64 {
        profiled
            .iter()
            .map(|t| {
                cell(&p.tasks[*t])
                    .profile
                    .as_ref()
                    .map_or(0.0, |x| x.batch1_pass_s)
            })
            .sum()
    };
    let teacher_s = pass_s(&|t| &t.teacher, &pairs[0]);
    let score = |t: &crate::TaskResult, v: f64| {
        if t.in_macro() {
            points(v)
        } else {
            format!("{v:.3}")
        }
    };
    let mut rows = Vec::new();
    let (params, mb) = size(&r.teacher.checkpoint);
    let mut row = vec![r.teacher.display(), "teacher".into(), params, mb];
    for t in &tasks {
        let res = &r.tasks[*t];
        row.push(score(res, res.primary().0));
    }
    row.push(
        r.macro_score
            .as_ref()
            .map_or(String::new(), |m| points(m.teacher)),
    );
    row.push(String::new());
    row.push(if profiled.is_empty() {
        String::new()
    } else {
        format!("{teacher_s:.1}")
    });
    row.push(String::new());
    rows.push(row);
    for p in &pairs {
        let (params, mb) = size(&p.student.checkpoint);
        let mut row = vec![p.student.display(), "student".into(), params, mb];
        for t in &tasks {
            row.push(
                p.tasks
                    .get(*t)
                    .map_or(String::new(), |res| score(res, res.primary().1)),
            );
        }
        match &p.macro_score {
            Some(m) => {
                row.push(points(m.student));
                row.push(percent(m.retention));
            }
            None => row.extend([String::new(), String::new()]),
        }
        if profiled.is_empty() {
            row.extend([String::new(), String::new()]);
        } else {
            let s = pass_s(&|t| &t.student, p);
            row.push(format!("{s:.1}"));
            row.push(if s > 0.0 {
                format!("{:.2}x", teacher_s / s)
            } else {
                "n/a".into()
            });
        }
        rows.push(row);
    }
    let mut headers = strings(&["model", "role", "params (M)", "size (MB)"]);
    headers.extend(tasks.iter().map(|t| t.to_string()));
    headers.extend(strings(&[
        "macro",
        "retention",
        "batch-1 passes (s)",
        "speedup",
    ]));
    use Align::*;
    let mut align = vec![Left, Left, Right, Right];
    align.extend(tasks.iter().map(|_| Right));
    align.extend([Right, Right, Right, Right]);
    TableView {
        headers,
        align,
        rows,
    }
}

/// What the models table shows, for the line under it.
pub const MODELS_NOTE: &str = "Scores are each task's primary metric x100 (perplexity as it is); retention is the student's macro score over the teacher's; batch-1 passes are summed over the tasks every model was profiled on, and speedup is the teacher's sum over the student's.";
