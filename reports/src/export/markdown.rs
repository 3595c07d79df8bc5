//! GitHub-flavoured Markdown: the summary printed at the end of a run, short enough for a
//! pull-request comment or a CI job summary.

use super::table::{markdown_table, Align};
use super::{percent, points, Exporter};
use crate::Results;

/// The Table 1 analog: per task, the primary metric x100 for teacher and student and the
/// student's retention, then the macro score.
pub struct MarkdownReport;

impl Exporter for MarkdownReport {
    fn render(&self, r: &Results) -> String {
        let mut rows = Vec::new();
        for (name, t) in &r.tasks {
            let (teacher, student) = t.primary();
            rows.push(vec![
                name.clone(),
                t.mode.clone(),
                t.primary_metric.clone(),
                t.n_examples.to_string(),
                points(teacher),
                points(student),
                percent(t.retention),
            ]);
        }
        if let Some(m) = &r.macro_score {
            rows.push(vec![
                "**macro**".into(),
                String::new(),
                String::new(),
                String::new(),
                points(m.teacher),
                points(m.student),
                percent(m.retention),
            ]);
        }
        let mut out = format!(
            "## distill-harness: {} (teacher) vs {} (student)\n\n",
            r.teacher.id, r.student.id
        );
        out += &markdown_table(
            &[
                "task",
                "mode",
                "metric",
                "n",
                "teacher",
                "student",
                "retention",
            ],
            &[
                Align::Left,
                Align::Left,
                Align::Left,
                Align::Right,
                Align::Right,
                Align::Right,
                Align::Right,
            ],
            &rows,
        );
        let size = |c: &Option<crate::CheckpointInfo>| {
            c.as_ref()
                .map(|c| {
                    format!(
                        "{:.1}M params, {}",
                        c.parameters as f64 / 1e6,
                        c.architecture
                    )
                })
                .unwrap_or_else(|| "not loaded".into())
        };
        out += &format!(
            "\nTeacher: {}. Student: {}. Scores are x100; retention is student / teacher on the primary metric.\n",
            size(&r.teacher.checkpoint),
            size(&r.student.checkpoint)
        );
        out += &cost_table(r);
        out += &paired_table(r);
        out
    }
}

/// Paired statistics and fidelity per task.
fn paired_table(r: &Results) -> String {
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"));
    let mut rows = Vec::new();
    let mut examples = String::new();
    for (name, t) in &r.tasks {
        let Some(c) = &t.comparison else { continue };
        let d = &c.primary_diff;
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
            match (&c.teacher_calibration, &c.student_calibration) {
                (Some(a), Some(b)) => format!("{:.3} / {:.3}", a.ece, b.ece),
                _ => "n/a".into(),
            },
            match (&c.teacher_calibration, &c.student_calibration) {
                (Some(a), Some(b)) => format!("{:.3} / {:.3}", a.brier, b.brier),
                _ => "n/a".into(),
            },
        ]);
        for dis in c.disagreements.iter().take(3) {
            let text = match &dis.text_b {
                Some(b) => format!("{} / {}", dis.text_a, b),
                None => dis.text_a.clone(),
            };
            examples += &format!(
                "- {name} #{}: gold {}, teacher {}, student {}: \"{}\"\n",
                dis.id,
                dis.gold,
                dis.teacher,
                dis.student,
                text.replace('|', "\\|")
            );
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n### Student against teacher\n\n");
    out += &markdown_table(
        &[
            "task",
            "student - teacher (pts, 95% CI)",
            "McNemar p",
            "top-1 agreement",
            "KL(t||s)",
            "ECE t / s",
            "Brier t / s",
        ],
        &[
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
        ],
        &rows,
    );
    out += "\nPaired bootstrap over examples (1,000 resamples, seed 42); McNemar's exact test on the examples only one model gets right; KL is the distillation loss over the output distributions.\n";
    if !examples.is_empty() {
        out += "\nFirst disagreements:\n\n";
        out += &examples;
    }
    out
}

/// The Table 3 analog: what each model costs per task, and the student's speedup.
fn cost_table(r: &Results) -> String {
    let mut rows = Vec::new();
    for (name, t) in &r.tasks {
        for (role, cell) in [("teacher", &t.teacher), ("student", &t.student)] {
            let Some(p) = &cell.profile else { continue };
            rows.push(vec![
                name.clone(),
                role.to_string(),
                format!("{:.1}", cell.checkpoint.parameters as f64 / 1e6),
                format!("{:.1}", cell.checkpoint.bytes_on_disk as f64 / 1e6),
                format!("{:.1}", p.batch1_pass_s),
                format!("{:.2}", p.latency_ms.p50),
                format!("{:.2}", p.latency_ms.p99),
                format!("{:.1}", p.throughput_per_s),
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
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n### Cost\n\n");
    out += &markdown_table(
        &[
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
        ],
        &[
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
        ],
        &rows,
    );
    out += "\nBatch-1 pass: one pass over the dev set at batch size 1 (the DistilBERT paper's protocol); speedup is the teacher's time over the student's. Energy says where it came from (rapl: measured; estimated: CPU time x watts per core).\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot() {
        let text = MarkdownReport.render(&crate::schema::tests::sample());
        let expected = "\
## distill-harness: teacher (teacher) vs student (student)

| task      | mode   | metric   |    n | teacher | student | retention |
| --------- | ------ | -------- | ---: | ------: | ------: | --------: |
| sst2      | mixed  | accuracy |  872 |   80.00 |   60.00 |     75.0% |
| stsb      | cosine | spearman | 1500 |   80.00 |   76.00 |     95.0% |
| **macro** |        |          |      |   80.00 |   68.00 |     85.0% |

Teacher: not loaded. Student: not loaded. Scores are x100; retention is student / teacher on the primary metric.
";
        assert_eq!(text, expected, "\n{text}");
    }
}
