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
//! Honesty rules: a baseline of other models or of settings that change the numbers is
//! refused (exit 2), and absolute speed is gated only when both files were measured on the
//! same kind of machine (CPU model, cores and threads, build profile, kernels); otherwise the
//! latency rows are shown with why they were not gated, and only the machine-independent
//! figures (metrics, memory) can fail the gate.

use crate::export::table::{markdown_table, Align};
use crate::{Cell, Results};

/// Gate settings.
#[derive(Debug, Clone, Copy)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub task: String,
    pub role: &'static str,
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
    #[error("no common tasks: baseline has [{baseline}], current has [{current}]")]
    NoCommonTasks { baseline: String, current: String },
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
    let fields: [(&'static str, String, String); 5] = [
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

/// Compare `current` against `baseline`.
pub fn compare(
    baseline: &Results,
    current: &Results,
    th: &Thresholds,
) -> Result<Vec<Finding>, CompareError> {
    if baseline.schema_version != current.schema_version {
        return Err(CompareError::SchemaMismatch {
            baseline: baseline.schema_version,
            current: current.schema_version,
        });
    }
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
                    role,
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
                    role,
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
                if let (Some(bm), Some(cm)) = (bp.peak_rss_bytes, cp.peak_rss_bytes) {
                    let growth = (cm as f64 / bm as f64 - 1.0) * 100.0;
                    out.push(Finding {
                        task: task.clone(),
                        role,
                        what: "peak RSS (MiB)".into(),
                        baseline: bm as f64 / (1u64 << 20) as f64,
                        current: cm as f64 / (1u64 << 20) as f64,
                        change: growth,
                        note: String::new(),
                        regression: growth > th.max_memory_growth,
                        in_points: false,
                    });
                }
            }
        }
    }
    Ok(out)
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

/// Merge results of separate runs (other tasks, e.g. a CI matrix) into one file. Refuses
/// mismatched schema versions, different teacher or student, and conflicting cells (the same
/// task with different numbers).
pub fn merge(files: &[(String, Results)]) -> Result<Results, String> {
    let Some((first_name, first)) = files.first() else {
        return Err("nothing to merge".into());
    };
    let mut merged = first.clone();
    for (name, r) in &files[1..] {
        if r.schema_version != merged.schema_version {
            return Err(format!(
                "{name}: schema version {} differs from {first_name}'s {}",
                r.schema_version, merged.schema_version
            ));
        }
        for (role, a, b) in [
            ("teacher", &merged.teacher.id, &r.teacher.id),
            ("student", &merged.student.id, &r.student.id),
        ] {
            if a != b {
                return Err(format!("{name}: {role} is '{b}' but {first_name}'s is '{a}'; only runs of the same pair can be merged"));
            }
        }
        for (task, t) in &r.tasks {
            match merged.tasks.get(task) {
                Some(existing)
                    if existing.teacher.metrics != t.teacher.metrics
                        || existing.student.metrics != t.student.metrics =>
                {
                    return Err(format!("{name}: task '{task}' conflicts with an earlier file (different metrics for the same cell)"));
                }
                Some(_) => {}
                None => {
                    merged.tasks.insert(task.clone(), t.clone());
                }
            }
        }
        for (task, why) in &r.skipped {
            if !merged.tasks.contains_key(task) {
                merged
                    .skipped
                    .entry(task.clone())
                    .or_insert_with(|| why.clone());
            }
        }
    }
    merged.skipped.retain(|t, _| !merged.tasks.contains_key(t));
    merged.update_macro();
    Ok(merged)
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
    fn same_file_twice_has_no_regression() {
        let r = profiled();
        let f = compare(&r, &r, &Thresholds::default()).unwrap();
        assert!(!f.is_empty());
        assert!(f.iter().all(|f| !f.regression), "{f:#?}");
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
        assert_eq!((hit[0].task.as_str(), hit[0].role), ("sst2", "student"));
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
        let lat: Vec<&Finding> = f.iter().filter(|f| f.what.contains("latency")).collect();
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
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-1.0) - 0.158655).abs() < 1e-6);
    }

    #[test]
    fn merge_combines_and_refuses_conflicts() {
        let full = sample();
        let mut a = full.clone();
        a.tasks.remove("sst2");
        let mut b = full.clone();
        b.tasks.remove("stsb");
        let m = merge(&[("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap();
        assert_eq!(m.tasks.keys().collect::<Vec<_>>(), ["sst2", "stsb"]);
        assert_eq!(m.macro_score, full.macro_score);
        let mut c = b.clone();
        c.tasks
            .get_mut("sst2")
            .unwrap()
            .student
            .metrics
            .insert("accuracy".into(), 0.1);
        let err = merge(&[("b".into(), b.clone()), ("c".into(), c)]).unwrap_err();
        assert!(err.contains("task 'sst2' conflicts"), "{err}");
        let mut d = b.clone();
        d.schema_version = 2;
        assert!(merge(&[("b".into(), b.clone()), ("d".into(), d)])
            .unwrap_err()
            .contains("schema version"));
        let mut e = b;
        e.teacher.id = "other".into();
        assert!(merge(&[("a".into(), a), ("e".into(), e)])
            .unwrap_err()
            .contains("same pair"));
    }
}
