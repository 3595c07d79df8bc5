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
        out
    }
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
