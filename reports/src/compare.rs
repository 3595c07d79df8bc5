//! The regression gate: compare a current results file against a named baseline, as criterion
//! compares against a saved baseline, with thresholds *and* a noise test, never a bare
//! percentage.
//!
//! - Metric: a drop of the primary metric is flagged when it exceeds `max_metric_drop` points
//!   (x100) and the half-width of the current run's paired-bootstrap 95% interval (the
//!   sampling noise of that metric on this dev set).
//! - Speed: a slowdown of the mean batch-1 latency is flagged when it exceeds `max_slowdown`
//!   percent and Welch's t-test on the per-example latencies (from their mean, standard
//!   deviation and count) rejects "no slower" at `alpha` (one-sided, normal approximation,
//!   fine for the hundreds of examples a dev set has).
//! - Memory: peak RSS growth beyond `max_memory_growth` percent.
//!
//! Honesty rules: a baseline of other models, of tasks the current run lacks, of other task
//! versions or of settings that change the numbers is refused (exit 2), and absolute speed and
//! memory are gated only when both files were measured on the same kind of machine (CPU model,
//! cores and threads, build profile, kernels); otherwise those rows are shown with why they
//! were not gated, and the machine-independent figures are gated instead: the metrics, and the
//! student's speedup over the teacher and its memory ratio, each measured within one file.

use crate::export::table::{markdown_table, Align};
use crate::{Cell, Profile, Results};

/// Gate settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Thresholds {
    /// Points (x100 of the metric).
    pub max_metric_drop: f64,
    /// Percent.
    pub max_slowdown: f64,
    /// Percent.
    pub max_memory_growth: f64,
    pub alpha: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_metric_drop: 1.0,
            max_slowdown: 10.0,
            max_memory_growth: 10.0,
            alpha: 0.05,
        }
    }
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    pub task: String,
    /// `teacher` or `student`; with several students, `student NAME`.
    pub role: String,
    pub what: String,
    pub baseline: f64,
    pub current: f64,
    /// Points for score metrics, percent for perplexity, speed and memory.
    pub change: f64,
    pub note: String,
    pub regression: bool,
    /// A score shown x100 with its change in points (accuracy, F1, correlations); otherwise
    /// values as they are and the change in percent.
    pub in_points: bool,
}

/// Why two files cannot be compared (exit code 2).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CompareError {
    #[error("schema version mismatch: baseline has {baseline}, current has {current}; rerun the baseline with this harness")]
    SchemaMismatch { baseline: u32, current: u32 },
    #[error("the baseline has student '{student}', which the current run lacks; run it, or compare against a baseline of the students run")]
    MissingStudent { student: String },
    #[error("no common tasks: baseline has [{baseline}], current has [{current}]")]
    NoCommonTasks { baseline: String, current: String },
    #[error("the current run lacks task(s) {missing} that the baseline has; run them, or compare against a baseline of the tasks run")]
    MissingTasks { missing: String },
    #[error("task '{task}' is version {baseline} in the baseline and {current} here (its data or scoring changed); rerun the baseline with this harness")]
    DifferentTaskVersion {
        task: String,
        baseline: u32,
        current: u32,
    },
    #[error("the baseline is of other models: its {role} is '{baseline}', the current run's is '{current}'; compare runs of the same pair")]
    DifferentModels {
        role: &'static str,
        baseline: String,
        current: String,
    },
    #[error("the baseline was run with other settings: {field} is {baseline} there and {current} here; rerun the baseline with the same settings")]
    DifferentSettings {
        field: &'static str,
        baseline: String,
        current: String,
    },
}

/// Why absolute speed of the two files cannot be compared, if it cannot: they were measured on
/// different kinds of machine, or one does not say where it was measured.
pub fn speed_not_comparable(baseline: &Results, current: &Results) -> Option<String> {
    let (b, c) = match (&baseline.environment, &current.environment) {
        (Some(b), Some(c)) => (b, c),
        (None, None) => return None,
        _ => return Some("one file does not record its machine".into()),
    };
    let fields: [(&str, String, String); 5] = [
        ("CPU", b.cpu_model.clone(), c.cpu_model.clone()),
        (
            "cores",
            b.logical_cores.to_string(),
            c.logical_cores.to_string(),
        ),
        (
            "threads",
            b.threads_used.to_string(),
            c.threads_used.to_string(),
        ),
        ("build", b.build_profile.clone(), c.build_profile.clone()),
        ("device", b.device.clone(), c.device.clone()),
    ];
    for (what, bv, cv) in fields {
        if bv != cv {
            return Some(format!(
                "measured on another machine ({what}: '{bv}' vs '{cv}')"
            ));
        }
    }
    // Kernels are recorded since schema 1's environment.kernels; a file without them (older)
    // is not held against a newer one.
    if !b.kernels.is_empty() && !c.kernels.is_empty() && b.kernels != c.kernels {
        return Some("measured with other kernels (environment.kernels differ)".into());
    }
    None
}

/// Refuse a baseline of other models or of settings that change the numbers.
fn check_same_run(baseline: &Results, current: &Results) -> Result<(), CompareError> {
    for (role, b, c) in [
        ("teacher", &baseline.teacher.id, &current.teacher.id),
        ("student", &baseline.student.id, &current.student.id),
    ] {
        if b != c {
            return Err(CompareError::DifferentModels {
                role,
                baseline: b.clone(),
                current: c.clone(),
            });
        }
    }
    let (b, c) = (&baseline.settings, &current.settings);
    // `max_length` is left out on purpose: `SEED_REGRESSION=1 scripts/nightly.sh` cuts inputs
    // with it to prove that the gate trips on a real quality loss.
    let fields: [(&'static str, String, String); 7] = [
        ("limit", format!("{:?}", b.limit), format!("{:?}", c.limit)),
        (
            "lm",
            serde_json::to_string(&b.lm).unwrap_or_default(),
            serde_json::to_string(&c.lm).unwrap_or_default(),
        ),
        ("dtype", b.dtype.clone(), c.dtype.clone()),
        (
            "probe_train_rows",
            b.probe_train_rows.to_string(),
            c.probe_train_rows.to_string(),
        ),
        (
            "probe_seed",
            b.probe_seed.to_string(),
            c.probe_seed.to_string(),
        ),
        ("probe_l2", b.probe_l2.to_string(), c.probe_l2.to_string()),
        (
            "probe_iterations",
            b.probe_iterations.to_string(),
            c.probe_iterations.to_string(),
        ),
    ];
    for (field, bv, cv) in fields {
        if bv != cv {
            return Err(CompareError::DifferentSettings {
                field,
                baseline: bv,
                current: cv,
            });
        }
    }
    Ok(())
}

/// Standard normal CDF (Abramowitz and Stegun 7.1.26 erf, |error| < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * x);
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// One-sided p-value that `current` is slower than `baseline`, by Welch's t statistic from
/// summary statistics.
pub fn slower_p_value(
    base_mean: f64,
    base_sd: f64,
    base_n: usize,
    cur_mean: f64,
    cur_sd: f64,
    cur_n: usize,
) -> f64 {
    let se =
        (base_sd * base_sd / base_n.max(1) as f64 + cur_sd * cur_sd / cur_n.max(1) as f64).sqrt();
    if se == 0.0 {
        return if cur_mean > base_mean { 0.0 } else { 1.0 };
    }
    1.0 - normal_cdf((cur_mean - base_mean) / se)
}

fn cells<'a>(r: &'a Results, task: &str) -> [(&'static str, &'a Cell); 2] {
    let t = &r.tasks[task];
    [("teacher", &t.teacher), ("student", &t.student)]
}

/// What `harness compare` found: every compared figure, why absolute speed was not gated if
/// it was not, and the tasks only the current run has (not compared).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CompareReport {
    pub regressions: usize,
    pub thresholds: Thresholds,
    /// `None`: both files come from the same kind of machine and absolute speed is gated.
    pub speed_not_compared: Option<String>,
    pub only_in_current: Vec<String>,
    pub findings: Vec<Finding>,
}

/// The Markdown report with each `REGRESSION` verdict in bold red (ANSI), for a terminal.
pub fn colour_regressions(markdown: &str) -> String {
    markdown.replace("| REGRESSION", "| \x1b[1;31mREGRESSION\x1b[0m")
}

/// Compare `current` against `baseline`: every compared figure.
pub fn compare(
    baseline: &Results,
    current: &Results,
    th: &Thresholds,
) -> Result<Vec<Finding>, CompareError> {
    compare_report(baseline, current, th).map(|r| r.findings)
}

/// Compare `current` against `baseline`, with what the verdict rests on. A run of several
/// students is compared student by student (matched by model id) against the baseline's; the
/// teacher's figures are compared once, with the first student.
pub fn compare_report(
    baseline: &Results,
    current: &Results,
    th: &Thresholds,
) -> Result<CompareReport, CompareError> {
    let readable = |v: u32| crate::schema::READABLE_SCHEMA_VERSIONS.contains(&v);
    if !readable(baseline.schema_version) || !readable(current.schema_version) {
        return Err(CompareError::SchemaMismatch {
            baseline: baseline.schema_version,
            current: current.schema_version,
        });
    }
    if baseline.more_students.is_empty() && current.more_students.is_empty() {
        return compare_pair(baseline, current, th);
    }
    let (bp, cp) = (baseline.pairs(), current.pairs());
    if let Some(b) = bp
        .iter()
        .find(|b| !cp.iter().any(|c| c.student.id == b.student.id))
    {
        return Err(CompareError::MissingStudent {
            student: b.student.id.clone(),
        });
    }
    let mut report: Option<CompareReport> = None;
    for (i, c) in cp.iter().enumerate() {
        let Some(b) = bp.iter().find(|b| b.student.id == c.student.id) else {
            if let Some(r) = report.as_mut() {
                r.only_in_current
                    .push(format!("student {}", c.student.display()));
            }
            continue;
        };
        let mut b = b.clone();
        if i > 0 {
            // The first pair compared the teacher already.
            b.teacher = c.teacher.clone();
        }
        let mut part = compare_pair(&b, c, th)?;
        let label = format!("student {}", c.student.display());
        part.findings.retain(|f| i == 0 || f.role != "teacher");
        for f in &mut part.findings {
            if f.role == "student" {
                f.role = label.clone();
            }
        }
        match report.as_mut() {
            None => report = Some(part),
            Some(r) => {
                r.regressions += part.findings.iter().filter(|f| f.regression).count();
                r.findings.extend(part.findings);
            }
        }
    }
    report.ok_or(CompareError::MissingStudent {
        student: current.student.id.clone(),
    })
}

/// Compare one teacher-student pair against the same pair in the baseline.
fn compare_pair(
    baseline: &Results,
    current: &Results,
    th: &Thresholds,
) -> Result<CompareReport, CompareError> {
    check_same_run(baseline, current)?;
    let speed_skipped = speed_not_comparable(baseline, current);
    let common: Vec<&String> = baseline
        .tasks
        .keys()
        .filter(|k| current.tasks.contains_key(*k))
        .collect();
    if common.is_empty() {
        let names = |r: &Results| r.tasks.keys().cloned().collect::<Vec<_>>().join(", ");
        return Err(CompareError::NoCommonTasks {
            baseline: names(baseline),
            current: names(current),
        });
    }
    let missing: Vec<&String> = baseline
        .tasks
        .keys()
        .filter(|k| !current.tasks.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(CompareError::MissingTasks {
            missing: missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    for task in &common {
        let (b, c) = (&baseline.tasks[*task], &current.tasks[*task]);
        if b.task_version != c.task_version {
            return Err(CompareError::DifferentTaskVersion {
                task: task.to_string(),
                baseline: b.task_version,
                current: c.task_version,
            });
        }
    }
    let mut out = Vec::new();
    for task in common {
        let metric = &current.tasks[task].primary_metric;
        let noise = current.tasks[task]
            .comparison
            .as_ref()
            .map(|c| (c.primary_diff.high - c.primary_diff.low) / 2.0 * 100.0)
            .unwrap_or(0.0);
        let result = &current.tasks[task];
        // Generation's primary figure (new tokens per prompt) describes the run, not quality.
        let scored = result.in_macro() || result.lower_is_better;
        for ((role, b), (_, c)) in cells(baseline, task).into_iter().zip(cells(current, task)) {
            if let (true, Some(&bv), Some(&cv)) =
                (scored, b.metrics.get(metric), c.metrics.get(metric))
            {
                let (change, note, regression, in_points) = if result.lower_is_better {
                    // Perplexity: a rise is the regression, measured in percent.
                    let rise = (cv / bv - 1.0) * 100.0;
                    let note = "lower is better; change in %".to_string();
                    (rise, note, rise > th.max_metric_drop, false)
                } else {
                    let drop = (bv - cv) * 100.0;
                    let note = format!("noise +/-{noise:.2} pts");
                    (-drop, note, drop > th.max_metric_drop && drop > noise, true)
                };
                out.push(Finding {
                    task: task.clone(),
                    role: role.to_string(),
                    what: metric.clone(),
                    baseline: bv,
                    current: cv,
                    change,
                    note,
                    regression,
                    in_points,
                });
            }
            if let (Some(bp), Some(cp)) = (&b.profile, &c.profile) {
                let (bl, cl) = (&bp.latency_ms, &cp.latency_ms);
                let slowdown = (cl.mean / bl.mean - 1.0) * 100.0;
                let p = slower_p_value(bl.mean, bl.stddev, bl.n, cl.mean, cl.stddev, cl.n);
                out.push(Finding {
                    task: task.clone(),
                    role: role.to_string(),
                    what: "batch-1 latency (ms, mean)".into(),
                    baseline: bl.mean,
                    current: cl.mean,
                    change: slowdown,
                    note: match &speed_skipped {
                        None => format!("p = {p:.3}"),
                        Some(why) => format!("not gated: {why}"),
                    },
                    regression: speed_skipped.is_none()
                        && slowdown > th.max_slowdown
                        && p < th.alpha,
                    in_points: false,
                });
                if let Some(f) = throughput_finding(task, role, bp, cp, th, &speed_skipped) {
                    out.push(f);
                }
                if let (Some(bm), Some(cm)) = (bp.peak_rss_bytes, cp.peak_rss_bytes) {
                    let growth = (cm as f64 / bm as f64 - 1.0) * 100.0;
                    out.push(Finding {
                        task: task.clone(),
                        role: role.to_string(),
                        what: "peak RSS (MiB)".into(),
                        baseline: bm as f64 / (1u64 << 20) as f64,
                        current: cm as f64 / (1u64 << 20) as f64,
                        change: growth,
                        note: match &speed_skipped {
                            None => String::new(),
                            Some(_) => "not gated: another machine (the ratio is)".into(),
                        },
                        regression: speed_skipped.is_none() && growth > th.max_memory_growth,
                        in_points: false,
                    });
                }
            }
        }
        if speed_skipped.is_some() {
            out.extend(ratio_findings(task, baseline, current, th));
        }
    }
    Ok(CompareReport {
        regressions: out.iter().filter(|f| f.regression).count(),
        thresholds: *th,
        speed_not_compared: speed_skipped,
        only_in_current: current
            .tasks
            .keys()
            .filter(|k| !baseline.tasks.contains_key(*k))
            .cloned()
            .collect(),
        findings: out,
    })
}

/// Machine-independent cost figures of a task, gated when absolute speed and memory cannot
/// be: the student's speedup over the teacher (batch-1 latency ratio) and its peak-memory
/// ratio, each measured within one file, on one machine.
fn ratio_findings(
    task: &str,
    baseline: &Results,
    current: &Results,
    th: &Thresholds,
) -> Vec<Finding> {
    fn profiles<'a>(r: &'a Results, task: &str) -> Option<(&'a Profile, &'a Profile)> {
        let t = &r.tasks[task];
        t.teacher.profile.as_ref().zip(t.student.profile.as_ref())
    }
    let (Some((bt, bs)), Some((ct, cs))) = (profiles(baseline, task), profiles(current, task))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let (bsp, csp) = (
        bt.latency_ms.mean / bs.latency_ms.mean,
        ct.latency_ms.mean / cs.latency_ms.mean,
    );
    if bsp.is_finite() && csp.is_finite() {
        let change = (csp / bsp - 1.0) * 100.0;
        out.push(Finding {
            task: task.to_string(),
            role: "student".into(),
            what: "speedup over the teacher (x, batch-1 latency ratio)".into(),
            baseline: bsp,
            current: csp,
            change,
            note: "machine-independent; gated as a slowdown".into(),
            regression: -change > th.max_slowdown,
            in_points: false,
        });
    }
    if let (Some(a), Some(b), Some(c), Some(d)) = (
        bt.peak_rss_bytes,
        bs.peak_rss_bytes,
        ct.peak_rss_bytes,
        cs.peak_rss_bytes,
    ) {
        let (br, cr) = (b as f64 / a as f64, d as f64 / c as f64);
        let change = (cr / br - 1.0) * 100.0;
        out.push(Finding {
            task: task.to_string(),
            role: "student".into(),
            what: "peak RSS / teacher's".into(),
            baseline: br,
            current: cr,
            change,
            note: "machine-independent".into(),
            regression: change > th.max_memory_growth,
            in_points: false,
        });
    }
    out
}

/// The report as Markdown: the verdict, what was and was not gated, then the table.
pub fn report_markdown(r: &CompareReport) -> String {
    let mut out = markdown(&r.findings, &r.thresholds);
    let mut notes = Vec::new();
    if let Some(why) = &r.speed_not_compared {
        notes.push(format!("Absolute speed and memory were not gated: {why}. Gated instead: metrics, retention, the student's speedup and memory ratios (machine-independent)."));
    }
    if !r.only_in_current.is_empty() {
        notes.push(format!(
            "Not in the baseline (not compared): {}.",
            r.only_in_current.join(", ")
        ));
    }
    if !notes.is_empty() {
        out += "\n";
        for n in notes {
            out += &format!("{n}\n");
        }
    }
    out
}

/// The findings as a Markdown diff table, regressions first marked.
pub fn markdown(findings: &[Finding], th: &Thresholds) -> String {
    let rows: Vec<Vec<String>> = findings
        .iter()
        .map(|f| {
            let is_metric = f.in_points;
            vec![
                if f.regression {
                    "REGRESSION".into()
                } else {
                    "ok".into()
                },
                f.task.clone(),
                f.role.to_string(),
                f.what.clone(),
                if is_metric {
                    format!("{:.2}", f.baseline * 100.0)
                } else {
                    format!("{:.2}", f.baseline)
                },
                if is_metric {
                    format!("{:.2}", f.current * 100.0)
                } else {
                    format!("{:.2}", f.current)
                },
                if is_metric {
                    format!("{:+.2} pts", f.change)
                } else {
                    format!("{:+.1}%", f.change)
                },
                f.note.clone(),
            ]
        })
        .collect();
    let n = findings.iter().filter(|f| f.regression).count();
    let mut out = format!(
        "## distill-harness compare: {}\n\nThresholds: metric drop > {} pts and beyond noise; slowdown > {}% and significant at {}; memory growth > {}%.\n\n",
        if n == 0 { "no regression".to_string() } else { format!("{n} regression(s)") },
        th.max_metric_drop,
        th.max_slowdown,
        th.alpha,
        th.max_memory_growth
    );
    out += &markdown_table(
        &[
            "", "task", "model", "figure", "baseline", "current", "change", "test",
        ],
        &[
            Align::Left,
            Align::Left,
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Left,
        ],
        &rows,
    );
    out
}

/// The throughput pass of two cells, when both ran several laps: the change of the mean, with
/// each side's slowest and fastest lap. A drop beyond `max_slowdown` is a regression only when
/// every current lap is slower than every baseline lap: two processes on a shared VM can
/// differ by more than a run's own spread (BENCHMARKS.md), and the laps are what shows it.
fn throughput_finding(
    task: &str,
    role: &str,
    b: &Profile,
    c: &Profile,
    th: &Thresholds,
    speed_skipped: &Option<String>,
) -> Option<Finding> {
    let (Some((b_lo, b_hi)), Some((c_lo, c_hi))) = (
        crate::schema::lap_range(&b.throughput_laps_per_s),
        crate::schema::lap_range(&c.throughput_laps_per_s),
    ) else {
        return None;
    };
    let change = (c.throughput_per_s / b.throughput_per_s - 1.0) * 100.0;
    let apart = c_hi < b_lo;
    let laps = format!("laps {b_lo:.1}-{b_hi:.1} -> {c_lo:.1}-{c_hi:.1}");
    let note = match speed_skipped {
        Some(why) => format!("{laps}; not gated: {why}"),
        None if apart => format!("{laps}: every lap slower"),
        None if c_lo > b_hi => format!("{laps}: every lap faster"),
        None => format!("{laps}: ranges overlap"),
    };
    let batch = c
        .throughput_batch_size
        .map_or(String::new(), |n| format!("batch {n}, "));
    Some(Finding {
        task: task.to_string(),
        role: role.to_string(),
        what: format!("throughput ({batch}per s)"),
        baseline: b.throughput_per_s,
        current: c.throughput_per_s,
        change,
        note,
        regression: speed_skipped.is_none() && -change > th.max_slowdown && apart,
        in_points: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::tests::{add_profiles, sample};

    fn profiled() -> Results {
        let mut r = sample();
        add_profiles(&mut r);
        r
    }

    #[test]
    fn regressions_are_coloured_and_nothing_else() {
        let text = "| verdict    | task |\n| ---------- | ---- |\n| REGRESSION | sst2 |\n| ok         | stsb |\n";
        let c = colour_regressions(text);
        assert!(c.contains("| \x1b[1;31mREGRESSION\x1b[0m | sst2 |"), "{c}");
        assert_eq!(c.matches('\x1b').count(), 2);
        assert_eq!(c.replace("\x1b[1;31m", "").replace("\x1b[0m", ""), text);
    }

    #[test]
    fn same_file_twice_has_no_regression() {
        let r = profiled();
        let f = compare(&r, &r, &Thresholds::default()).unwrap();
        assert!(!f.is_empty());
        assert!(f.iter().all(|f| !f.regression), "{f:#?}");
    }

    #[test]
    fn several_students_are_compared_each_against_its_own_baseline() {
        let base = crate::schema::tests::several_students();
        let f = compare(&base, &base, &Thresholds::default()).unwrap();
        assert!(f.iter().all(|f| !f.regression), "{f:#?}");
        // The teacher once, each student under its name.
        let roles: std::collections::BTreeSet<&str> = f.iter().map(|f| f.role.as_str()).collect();
        assert_eq!(
            roles.into_iter().collect::<Vec<_>>(),
            [
                "student student",
                "student student-2",
                "student student-3",
                "teacher"
            ]
        );
        let teacher_rows = f.iter().filter(|f| f.role == "teacher").count();
        let one_pair = compare(&base.pairs()[0], &base.pairs()[0], &Thresholds::default());
        let teacher_rows_of_one_pair = one_pair
            .unwrap()
            .iter()
            .filter(|f| f.role == "teacher")
            .count();
        assert_eq!(teacher_rows, teacher_rows_of_one_pair);

        // The third student loses 5 points on SST-2: one regression, named by its student.
        let mut cur = base.clone();
        let cell = &mut cur.more_students[1].tasks.get_mut("sst2").unwrap().student;
        let acc = cell.metrics["accuracy"];
        cell.metrics.insert("accuracy".into(), acc - 0.05);
        let report = compare_report(&base, &cur, &Thresholds::default()).unwrap();
        let hit: Vec<_> = report.findings.iter().filter(|f| f.regression).collect();
        assert_eq!(report.regressions, 1, "{hit:#?}");
        assert_eq!(
            (hit[0].task.as_str(), hit[0].role.as_str()),
            ("sst2", "student student-3")
        );

        // A baseline student the current run lacks is refused, not skipped.
        let mut fewer = base.clone();
        fewer.more_students.pop();
        let err = compare(&base, &fewer, &Thresholds::default()).unwrap_err();
        assert_eq!(
            err,
            CompareError::MissingStudent {
                student: "../models/student-3".into()
            }
        );
        // A student only the current run has is listed, not compared.
        let report = compare_report(&fewer, &base, &Thresholds::default()).unwrap();
        assert_eq!(report.only_in_current, ["student student-3"]);
    }

    #[test]
    fn a_version_1_baseline_is_compared_with_a_version_2_run() {
        let cur = profiled();
        let mut base = cur.clone();
        base.schema_version = 1;
        assert!(compare(&base, &cur, &Thresholds::default()).is_ok());
    }

    #[test]
    fn worse_metric_beyond_threshold_is_a_regression() {
        let base = profiled();
        let mut cur = base.clone();
        cur.tasks
            .get_mut("sst2")
            .unwrap()
            .student
            .metrics
            .insert("accuracy".into(), 0.55);
        let f = compare(&base, &cur, &Thresholds::default()).unwrap();
        let hit: Vec<_> = f.iter().filter(|f| f.regression).collect();
        assert_eq!(hit.len(), 1, "{f:#?}");
        assert_eq!(
            (hit[0].task.as_str(), hit[0].role.as_str()),
            ("sst2", "student")
        );
        assert!((hit[0].change + 5.0).abs() < 1e-9);
        // Within the threshold: not a regression.
        cur.tasks
            .get_mut("sst2")
            .unwrap()
            .student
            .metrics
            .insert("accuracy".into(), 0.595);
        assert!(compare(&base, &cur, &Thresholds::default())
            .unwrap()
            .iter()
            .all(|f| !f.regression));
    }

    #[test]
    fn a_perplexity_rise_is_the_regression() {
        let mut base = profiled();
        let t = base.tasks.get_mut("stsb").unwrap();
        t.primary_metric = "perplexity".into();
        for c in [&mut t.teacher, &mut t.student] {
            c.metrics.insert("perplexity".into(), 20.0);
        }
        t.lower_is_better = true;
        let mut cur = base.clone();
        let set = |r: &mut Results, v: f64| {
            r.tasks
                .get_mut("stsb")
                .unwrap()
                .student
                .metrics
                .insert("perplexity".into(), v);
        };
        // Lower perplexity is better: no regression however large the fall.
        set(&mut cur, 10.0);
        let f = compare(&base, &cur, &Thresholds::default()).unwrap();
        assert!(f.iter().all(|f| !f.regression), "{f:#?}");
        // A 5% rise beats the default 1% threshold.
        set(&mut cur, 21.0);
        let f = compare(&base, &cur, &Thresholds::default()).unwrap();
        let hit: Vec<_> = f.iter().filter(|f| f.regression).collect();
        assert_eq!(hit.len(), 1, "{f:#?}");
        assert!((hit[0].change - 5.0).abs() < 1e-9);
        // The latency and memory checks still run for the task.
        assert!(f
            .iter()
            .any(|f| f.task == "stsb" && f.what.contains("latency")));
    }

    #[test]
    fn slowdown_needs_threshold_and_significance() {
        let base = profiled();
        let mut cur = base.clone();
        let p = cur
            .tasks
            .get_mut("stsb")
            .unwrap()
            .student
            .profile
            .as_mut()
            .unwrap();
        p.latency_ms.mean *= 1.5;
        let f = compare(&base, &cur, &Thresholds::default()).unwrap();
        assert!(
            f.iter().any(|f| f.regression && f.what.contains("latency")),
            "{f:#?}"
        );
        // Same slowdown with huge spread is not significant.
        let p = cur
            .tasks
            .get_mut("stsb")
            .unwrap()
            .student
            .profile
            .as_mut()
            .unwrap();
        p.latency_ms.stddev = 1000.0;
        let f = compare(&base, &cur, &Thresholds::default()).unwrap();
        assert!(f.iter().all(|f| !f.regression), "{f:#?}");
    }

    #[test]
    fn a_throughput_drop_is_gated_only_when_every_lap_is_slower() {
        let mut base = profiled();
        let laps = |r: &mut Results, laps: &[f64]| {
            let p = r
                .tasks
                .get_mut("stsb")
                .unwrap()
                .student
                .profile
                .as_mut()
                .unwrap();
            p.throughput_laps_per_s = laps.to_vec();
            p.throughput_per_s = laps.iter().sum::<f64>() / laps.len() as f64;
        };
        laps(&mut base, &[100.0, 104.0, 102.0]);
        let row = |f: &[Finding]| {
            f.iter()
                .find(|f| {
                    f.task == "stsb" && f.role == "student" && f.what.starts_with("throughput")
                })
                .cloned()
                .unwrap()
        };
        // 20% slower, every lap below the baseline's slowest: a regression.
        let mut cur = base.clone();
        laps(&mut cur, &[81.0, 83.0, 82.0]);
        let f = row(&compare(&base, &cur, &Thresholds::default()).unwrap());
        assert!(f.regression, "{f:#?}");
        assert!((f.change + 19.607843).abs() < 1e-4, "{}", f.change);
        assert_eq!(f.note, "laps 100.0-104.0 -> 81.0-83.0: every lap slower");
        // As slow on average, but one lap as fast as the baseline's: within the noise.
        laps(&mut cur, &[60.0, 101.0, 85.0]);
        let f = row(&compare(&base, &cur, &Thresholds::default()).unwrap());
        assert!(!f.regression, "{f:#?}");
        assert!(f.note.ends_with("ranges overlap"), "{}", f.note);
        // Disjoint but within the threshold (5% slower): not a regression either.
        laps(&mut cur, &[96.0, 97.0, 98.0]);
        assert!(!row(&compare(&base, &cur, &Thresholds::default()).unwrap()).regression);
    }

    #[test]
    fn memory_growth_is_gated() {
        let base = profiled();
        let mut cur = base.clone();
        let p = cur
            .tasks
            .get_mut("sst2")
            .unwrap()
            .teacher
            .profile
            .as_mut()
            .unwrap();
        p.peak_rss_bytes = p.peak_rss_bytes.map(|b| b * 2);
        let f = compare(&base, &cur, &Thresholds::default()).unwrap();
        assert!(f.iter().any(|f| f.regression && f.what.contains("RSS")));
    }

    #[test]
    fn speed_on_another_machine_is_shown_but_not_gated() {
        let mut base = profiled();
        base.environment = Some(crate::Environment {
            cpu_model: "Test CPU".into(),
            cpu_flags: vec!["avx2".into()],
            logical_cores: 2,
            threads_used: 2,
            memory_bytes: None,
            os: "linux".into(),
            candle_version: "0.11.1".into(),
            build_profile: "release".into(),
            target_features: Vec::new(),
            git_commit: None,
            device: "cpu".into(),
            kernels: Default::default(),
        });
        let mut cur = base.clone();
        for t in cur.tasks.values_mut() {
            let p = t.student.profile.as_mut().unwrap();
            p.latency_ms.mean *= 3.0;
        }
        let f = compare(&base, &cur, &Thresholds::default()).unwrap();
        assert!(f.iter().any(|f| f.regression), "same machine: gated");
        cur.environment.as_mut().unwrap().cpu_model = "Other CPU".into();
        let f = compare(&base, &cur, &Thresholds::default()).unwrap();
        let lat: Vec<&Finding> = f
            .iter()
            .filter(|f| f.what.starts_with("batch-1 latency"))
            .collect();
        assert!(
            !lat.is_empty() && lat.iter().all(|f| !f.regression),
            "{lat:?}"
        );
        assert!(
            lat[0]
                .note
                .contains("not gated: measured on another machine (CPU:"),
            "{}",
            lat[0].note
        );
        // The student's speedup over the teacher is measured within each file, so it is
        // gated: a student 3x slower against the same teacher is a regression.
        let speedup: Vec<&Finding> = f.iter().filter(|f| f.what.starts_with("speedup")).collect();
        assert_eq!(speedup.len(), cur.tasks.len());
        assert!(speedup.iter().all(|f| f.regression), "{speedup:?}");
        assert!((speedup[0].change - (1.0 / 3.0 - 1.0) * 100.0).abs() < 1e-9);
        // A machine 3x slower for both models: nothing to flag.
        for t in cur.tasks.values_mut() {
            let p = t.teacher.profile.as_mut().unwrap();
            p.latency_ms.mean *= 3.0;
        }
        let report = compare_report(&base, &cur, &Thresholds::default()).unwrap();
        assert_eq!(report.regressions, 0, "{:#?}", report.findings);
        assert!(report
            .speed_not_compared
            .as_deref()
            .unwrap()
            .contains("CPU"));
        let md = report_markdown(&report);
        assert!(
            md.contains("Absolute speed and memory were not gated: measured on another machine"),
            "{md}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["regressions"], 0);
        assert!(json["findings"].as_array().unwrap().len() > 2);
    }

    #[test]
    fn a_baseline_of_other_models_or_settings_is_refused() {
        let base = profiled();
        let mut cur = base.clone();
        cur.student.id = "someone-else".into();
        let err = compare(&base, &cur, &Thresholds::default()).unwrap_err();
        assert!(matches!(
            err,
            CompareError::DifferentModels {
                role: "student",
                ..
            }
        ));
        assert!(
            err.to_string().contains("compare runs of the same pair"),
            "{err}"
        );
        let mut cur = base.clone();
        cur.settings.probe_train_rows += 1;
        let err = compare(&base, &cur, &Thresholds::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("probe_train_rows is 2000 there and 2001 here"),
            "{err}"
        );
    }

    #[test]
    fn incomparable_files_are_errors() {
        let base = profiled();
        let mut cur = base.clone();
        cur.schema_version = 99;
        assert!(matches!(
            compare(&base, &cur, &Thresholds::default()),
            Err(CompareError::SchemaMismatch { .. })
        ));
        let mut cur = base.clone();
        cur.tasks.clear();
        let err = compare(&base, &cur, &Thresholds::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("no common tasks"), "{err}");
    }

    #[test]
    fn a_baseline_of_other_tasks_or_task_versions_is_refused() {
        let base = profiled();
        let mut cur = base.clone();
        cur.tasks.remove("sst2");
        let err = compare(&base, &cur, &Thresholds::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("lacks task(s) sst2 that the baseline has"),
            "{err}"
        );
        let mut cur = base.clone();
        cur.tasks.get_mut("stsb").unwrap().task_version += 1;
        let err = compare(&base, &cur, &Thresholds::default()).unwrap_err();
        assert!(
            matches!(err, CompareError::DifferentTaskVersion { .. }),
            "{err}"
        );
        let mut cur = base.clone();
        cur.settings.limit = Some(5);
        let err = compare(&base, &cur, &Thresholds::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("limit is None there and Some(5) here"),
            "{err}"
        );
        // A task only the current run has is listed, not compared.
        let mut more = base.clone();
        more.tasks.remove("sst2");
        let report = compare_report(&more, &base, &Thresholds::default()).unwrap();
        assert_eq!(report.only_in_current, ["sst2"]);
        assert!(report.findings.iter().all(|f| f.task == "stsb"));
    }

    #[test]
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-1.0) - 0.158655).abs() < 1e-6);
    }
}
