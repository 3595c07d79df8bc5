//! GitHub-flavoured Markdown: the summary printed at the end of a run, short enough for a
//! pull-request comment or a CI job summary.

use super::table::markdown_table;
use super::views::{self, TableView};
use super::Exporter;
use crate::Results;

/// Scores (Table 1 analog), cost (Table 3 analog) and teacher-against-student statistics.
pub struct MarkdownReport;

fn table(v: &TableView) -> String {
    markdown_table(&v.headers, &v.align, &v.rows)
}

impl Exporter for MarkdownReport {
    fn render(&self, r: &Results) -> String {
        let mut out = format!(
            "## distill-harness: {} (teacher) vs {} (student)\n\n",
            r.teacher.id, r.student.id
        );
        if let Some(p) = views::provenance(r) {
            out += &format!("{p}\n\n");
        }
        out += &table(&views::scores(r, "**macro**"));
        let size = |c: &Option<crate::CheckpointInfo>| {
            c.as_ref()
                .map(|c| {
                    let mut s = format!(
                        "{:.1}M params, {}",
                        c.parameters as f64 / 1e6,
                        c.architecture
                    );
                    // A quantized model names the kernel that ran its format: candle's
                    // kernels differ between CPUs, and so may the score.
                    if let Some(q) = &c.quantization {
                        s += &format!(", {q}");
                        let format = q.split_whitespace().next().unwrap_or_default();
                        if let Some(kernel) = c.kernels.get(format) {
                            s += &format!(" on {kernel}");
                        }
                    }
                    s
                })
                .unwrap_or_else(|| "not loaded".into())
        };
        out += &format!(
            "\nTeacher: {}. Student: {}. Quality scores are x100 (perplexities and token counts as they are); retention is student / teacher on the primary metric (teacher / student for perplexity).\n",
            size(&r.teacher.checkpoint),
            size(&r.student.checkpoint)
        );
        if let Some(v) = views::costs(r) {
            out += &format!("\n### Cost\n\n{}\n{}\n", table(&v), views::COST_NOTE);
        }
        if let Some(v) = views::llm_accuracy(r) {
            out += &format!(
                "\n### LLM accuracy\n\n{}\n{}\n",
                table(&v),
                views::LLM_ACCURACY_NOTE
            );
        }
        if let Some(v) = views::language_modelling(r) {
            out += &format!("\n### Language modelling\n\n{}", table(&v));
            if let Some(f) = views::token_fidelity(r) {
                out += &format!("\n{}", table(&f));
            }
            if let Some(k) = views::kl_statistics(r) {
                out += &format!("\n{}\n{}\n", table(&k), views::KL_NOTE);
            }
            out += &format!("\n{}\n", views::LM_NOTE);
        }
        if let Some(v) = views::paired(r) {
            out += &format!(
                "\n### Student against teacher\n\n{}\n{}\n",
                table(&v),
                views::PAIRED_NOTE
            );
            let examples = views::disagreements(r, 3);
            if !examples.is_empty() {
                out += "\nFirst disagreements:\n\n";
                for e in examples {
                    out += &format!("- {}\n", e.replace('|', "\\|"));
                }
            }
        }
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

Teacher: not loaded. Student: not loaded. Quality scores are x100 (perplexities and token counts as they are); retention is student / teacher on the primary metric (teacher / student for perplexity).
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn snapshot_of_the_llm_accuracy_table() {
        use crate::schema::tests::cell;
        use crate::{Mode, TaskResult};
        let mut r = crate::schema::tests::sample();
        r.tasks.clear();
        let choice = |acc: f64, norm: f64| {
            let mut c = cell(Mode::LogLikelihood, "acc", acc);
            c.metrics.insert("acc_stderr".into(), 0.01);
            c.metrics.insert("acc_norm".into(), norm);
            c.metrics.insert("acc_norm_stderr".into(), 0.02);
            c
        };
        r.tasks.insert(
            "arc_easy".into(),
            TaskResult::new(1, "acc_norm", 2376, choice(0.6, 0.5), choice(0.57, 0.48)),
        );
        let mut boolq = TaskResult::new(1, "acc", 3270, choice(0.6, 0.0), choice(0.6, 0.0));
        for c in [&mut boolq.teacher, &mut boolq.student] {
            c.metrics.remove("acc_norm");
            c.metrics.remove("acc_norm_stderr");
        }
        r.tasks.insert("boolq".into(), boolq);
        let text = MarkdownReport.render(&r);
        let table = &text[text.find("### LLM accuracy").expect("LLM accuracy section")..];
        let expected = "\
### LLM accuracy

| task            |    n | primary  |  teacher acc |  student acc | teacher acc_norm | student acc_norm | retention |
| --------------- | ---: | -------- | -----------: | -----------: | ---------------: | ---------------: | --------: |
| arc_easy        | 2376 | acc_norm | 60.00 ± 1.00 | 57.00 ± 1.00 |     50.00 ± 2.00 |     48.00 ± 2.00 |     96.0% |
| boolq           | 3270 | acc      | 60.00 ± 1.00 | 60.00 ± 1.00 |                  |                  |    100.0% |
| macro (primary) |      |          |        55.00 |        54.00 |                  |                  |     98.2% |
";
        assert!(table.starts_with(expected), "\n{table}");
    }

    #[test]
    fn snapshot_with_cost() {
        let mut r = crate::schema::tests::sample();
        crate::schema::tests::add_profiles(&mut r);
        let text = MarkdownReport.render(&r);
        let cost = &text[text.find("### Cost").expect("cost section")..];
        let expected = "\
### Cost

| task | model   | params (M) | size (MB) | batch-1 pass (s) | p50 (ms) | p99 (ms) | examples/s | peak RSS (MiB) | J / 1k examples | speedup |
| ---- | ------- | ---------: | --------: | ---------------: | -------: | -------: | ---------: | -------------: | --------------: | ------: |
| sst2 | teacher |        0.0 |       0.0 |             20.0 |    20.00 |    40.00 |       50.0 |            200 | 100 (estimated) |         |
| sst2 | student |        0.0 |       0.0 |             10.0 |    10.00 |    20.00 |      100.0 |            100 |  50 (estimated) |   2.00x |
| stsb | teacher |        0.0 |       0.0 |             20.0 |    20.00 |    40.00 |       50.0 |            200 | 100 (estimated) |         |
| stsb | student |        0.0 |       0.0 |             10.0 |    10.00 |    20.00 |      100.0 |            100 |  50 (estimated) |   2.00x |
";
        assert!(cost.starts_with(expected), "\n{cost}");
    }

    #[test]
    fn a_throughput_pass_of_several_laps_shows_their_range() {
        let mut r = crate::schema::tests::sample();
        crate::schema::tests::add_profiles(&mut r);
        let p = r
            .tasks
            .get_mut("sst2")
            .unwrap()
            .student
            .profile
            .as_mut()
            .unwrap();
        p.throughput_laps_per_s = vec![104.5, 96.0, 100.0];
        let text = MarkdownReport.render(&r);
        let row = text
            .lines()
            .find(|l| l.starts_with("| sst2 | student |"))
            .expect("the student's cost row");
        assert!(row.contains("| 100.0 (96.0-104.5) |"), "{row}");
        // One lap has no range to show.
        let row = text
            .lines()
            .find(|l| l.starts_with("| stsb | student |"))
            .unwrap();
        assert!(row.split('|').any(|c| c.trim() == "100.0"), "{row}");
    }
}
