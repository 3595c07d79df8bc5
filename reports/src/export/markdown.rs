//! GitHub-flavoured Markdown: the summary printed at the end of a run, short enough for a
//! pull-request comment or a CI job summary.

use super::table::markdown_table;
use super::views::{self, TableView};
use super::Exporter;
use crate::Results;

/// Scores (Table 1 analog), cost (Table 3 analog) and teacher-against-student statistics.
pub struct MarkdownReport;

fn table(v: &TableView) -> String {
    let headers: Vec<&str> = v.headers.iter().map(String::as_str).collect();
    markdown_table(&headers, &v.align, &v.rows)
}

impl Exporter for MarkdownReport {
    fn render(&self, r: &Results) -> String {
        if r.more_students.is_empty() {
            let mut out = format!(
                "## distill-harness: {} (teacher) vs {} (student)\n\n",
                r.teacher.display(),
                r.student.display()
            );
            if let Some(p) = views::provenance(r) {
                out += &format!("{p}\n\n");
            }
            return out + &pair_body(r, "###");
        }
        // Several students: one table of every model, then each student's pair as a
        // one-student report a heading level down.
        let pairs = r.pairs();
        let names: Vec<String> = pairs.iter().map(|p| p.student.display()).collect();
        let mut out = format!(
            "## distill-harness: {} (teacher) vs {} (students)\n\n",
            r.teacher.display(),
            names.join(", ")
        );
        if let Some(p) = views::provenance(r) {
            out += &format!("{p}\n\n");
        }
        out += &format!(
            "### Models\n\n{}\n{}\n",
            table(&views::models(r)),
            views::MODELS_NOTE
        );
        for (p, name) in pairs.iter().zip(&names) {
            out += &format!("\n### {name} against the teacher\n\n");
            out += &pair_body(p, "####");
        }
        out
    }
}

/// A teacher-student pair's sections, with sub-headings at level `h` (`###`).
fn pair_body(r: &Results, h: &str) -> String {
    let mut out = table(&views::scores(r, "**macro**"));
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
        out += &format!("\n{h} Cost\n\n{}\n{}\n", table(&v), views::COST_NOTE);
    }
    if let Some(v) = views::llm_accuracy(r) {
        out += &format!(
            "\n{h} LLM accuracy\n\n{}\n{}\n",
            table(&v),
            views::LLM_ACCURACY_NOTE
        );
    }
    if let Some(v) = views::language_modelling(r) {
        out += &format!("\n{h} Language modelling\n\n{}", table(&v));
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
            "\n{h} Student against teacher\n\n{}\n{}\n",
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
    fn several_students_get_one_row_each_then_a_section_each() {
        let text = MarkdownReport.render(&crate::schema::tests::several_students());
        assert!(
            text.starts_with("## distill-harness: teacher (teacher) vs student, student-2, student-3 (students)\n"),
            "{text}"
        );
        let models = &text[text.find("### Models").unwrap()..];
        let expected = "\
### Models

| model     | role    | params (M) | size (MB) |  sst2 |  stsb | macro | retention | batch-1 passes (s) | speedup |
| --------- | ------- | ---------: | --------: | ----: | ----: | ----: | --------: | -----------------: | ------: |
| teacher   | teacher |        n/a |       n/a | 80.00 | 80.00 | 80.00 |           |               40.0 |         |
| student   | student |        n/a |       n/a | 60.00 | 76.00 | 68.00 |     85.0% |               20.0 |   2.00x |
| student-2 | student |        n/a |       n/a | 72.00 | 72.00 | 72.00 |     90.0% |               13.3 |   3.00x |
| student-3 | student |        n/a |       n/a | 40.00 | 40.00 | 40.00 |     50.0% |               40.0 |   1.00x |
";
        assert!(models.starts_with(expected), "\n{models}");
        // Each student's own section, with its cost rows a heading level down.
        for name in ["student", "student-2", "student-3"] {
            assert!(
                text.contains(&format!("\n### {name} against the teacher\n")),
                "{name}"
            );
        }
        assert_eq!(text.matches("\n#### Cost\n").count(), 3);
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
