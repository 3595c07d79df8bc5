//! CSV, tidy: one row per model x task x metric (scores and cost figures alike), so a
//! spreadsheet or a data frame can pivot it any way.

use super::Exporter;
use crate::Results;

/// `task,role,model,mode,metric,value`.
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
        let mut out = String::from("task,role,model,mode,metric,value\n");
        for (task, t) in &r.tasks {
            for (role, cell) in [("teacher", &t.teacher), ("student", &t.student)] {
                let mut row = |metric: &str, value: f64| {
                    out += &format!(
                        "{},{},{},{},{},{}\n",
                        quote(task),
                        role,
                        quote(&cell.checkpoint.id),
                        cell.mode.as_str(),
                        quote(metric),
                        value
                    );
                };
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
task,role,model,mode,metric,value
sst2,teacher,m,probe,accuracy,0.8
sst2,teacher,m,probe,parameters,10
sst2,student,m,head,accuracy,0.6
sst2,student,m,head,parameters,10
stsb,teacher,m,cosine,spearman,0.8
stsb,teacher,m,cosine,parameters,10
stsb,student,m,cosine,spearman,0.76
stsb,student,m,cosine,parameters,10
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn quotes_fields_with_commas() {
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("x\"y,z"), "\"x\"\"y,z\"");
    }
}
