//! CSV, tidy: one row per model x task x metric (scores and cost figures alike), so a
//! spreadsheet or a data frame can pivot it any way.

use super::Exporter;
use crate::Results;

/// `task,role,model,name,mode,metric,value`: `model` is the checkpoint, `name` the model's
/// display name (which tells the students of a run of several apart, and a quantized copy
/// from its original). Each student's rows carry its `retention` and `speedup`.
pub struct CsvReport;

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl Exporter for CsvReport {
    fn render(&self, r: &Results) -> String {
        let mut out = String::from("task,role,model,name,mode,metric,value\n");
        let pairs = r.pairs();
        for (task, t) in &r.tasks {
            // The teacher once, then each student that ran the task.
            let mut cells = vec![("teacher", &t.teacher, r.teacher.display(), None)];
            for p in &pairs {
                if let Some(pt) = p.tasks.get(task) {
                    cells.push(("student", &pt.student, p.student.display(), Some(pt)));
                }
            }
            for (role, cell, name, pair) in cells {
                let mut row = |metric: &str, value: f64| {
                    out += &format!(
                        "{},{},{},{},{},{},{}\n",
                        quote(task),
                        role,
                        quote(&cell.checkpoint.id),
                        quote(&name),
                        cell.mode.as_str(),
                        quote(metric),
                        value
                    );
                };
                if let Some(pt) = pair {
                    if let Some(v) = pt.retention {
                        row("retention", v);
                    }
                    if let Some(v) = pt.speedup {
                        row("speedup", v);
                    }
                }
                for (m, v) in &cell.metrics {
                    row(m, *v);
                }
                row("parameters", cell.checkpoint.parameters as f64);
                if let Some(p) = &cell.profile {
                    row("batch1_pass_s", p.batch1_pass_s);
                    row("latency_ms_p50", p.latency_ms.p50);
                    row("latency_ms_p90", p.latency_ms.p90);
                    row("latency_ms_p99", p.latency_ms.p99);
                    row("throughput_per_s", p.throughput_per_s);
                    if let Some(b) = p.peak_rss_bytes {
                        row("peak_rss_bytes", b as f64);
                    }
                    if let Some(j) = p.energy_j_per_1k {
                        row(&format!("energy_j_per_1k_{}", p.energy_source), j);
                    }
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
        let text = CsvReport.render(&crate::schema::tests::sample());
        let expected = "\
task,role,model,name,mode,metric,value
sst2,teacher,m,teacher,probe,accuracy,0.8
sst2,teacher,m,teacher,probe,parameters,10
sst2,student,m,student,head,retention,0.7499999999999999
sst2,student,m,student,head,accuracy,0.6
sst2,student,m,student,head,parameters,10
stsb,teacher,m,teacher,cosine,spearman,0.8
stsb,teacher,m,teacher,cosine,parameters,10
stsb,student,m,student,cosine,retention,0.95
stsb,student,m,student,cosine,spearman,0.76
stsb,student,m,student,cosine,parameters,10
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn every_student_of_a_run_of_several_has_its_rows() {
        let text = CsvReport.render(&crate::schema::tests::several_students());
        let rows = |task: &str, name: &str, metric: &str| -> Vec<String> {
            text.lines()
                .filter(|l| {
                    let f: Vec<&str> = l.split(',').collect();
                    f[0] == task && f[3] == name && f[5] == metric
                })
                .map(|l| l.rsplit(',').next().unwrap().to_string())
                .collect()
        };
        assert_eq!(rows("sst2", "teacher", "accuracy"), ["0.8"]);
        assert_eq!(rows("sst2", "student-3", "accuracy"), ["0.4"]);
        assert_eq!(rows("sst2", "student-2", "speedup"), ["3"]);
        assert_eq!(rows("stsb", "student-3", "retention"), ["0.5"]);
        // Four models, two tasks: the teacher's rows are not repeated per student.
        assert_eq!(
            text.lines()
                .filter(|l| l.ends_with(",parameters,10"))
                .count(),
            8
        );
    }

    #[test]
    fn quotes_fields_with_commas() {
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("x\"y,z"), "\"x\"\"y,z\"");
    }
}
