//! One self-contained HTML file: a header (date, commit, settings, machine), tables and
//! inline SVG charts (no scripts, no network), so it opens anywhere, from a CI artifact or an
//! e-mail, and prints. The charts are in [`super::charts`].

use super::charts;
use super::svg::esc;
use super::views::{self, TableView};
use super::Exporter;
use crate::Results;

pub struct HtmlReport;

fn html_table(v: &TableView) -> String {
    let mut t = String::from("<table><tr>");
    for h in &v.headers {
        t += &format!("<th>{}</th>", esc(h));
    }
    t += "</tr>";
    for row in &v.rows {
        t += "<tr>";
        for c in row {
            t += &format!("<td>{}</td>", esc(c));
        }
        t += "</tr>";
    }
    t + "</table>\n"
}

impl Exporter for HtmlReport {
    fn render(&self, r: &Results) -> String {
        let pairs = r.pairs();
        let teacher = esc(&r.teacher.display());
        let students: Vec<String> = pairs.iter().map(|p| esc(&p.student.display())).collect();
        let (word, list) = if students.len() == 1 {
            ("student", students[0].clone())
        } else {
            ("students", students.join(", "))
        };
        let mut out = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>distill-harness: {teacher} vs {list}</title><style>{STYLE}</style></head><body>\n<h1>distill-harness</h1>\n<p>Teacher <b>{teacher}</b>, {word} <b>{list}</b>. Scores x100; retention is student / teacher on each task's primary metric.</p>\n"
        );
        out += &header(r);
        if let Some(p) = views::provenance(r) {
            out += &format!("<p class=\"note\">{}</p>\n", esc(&p));
        }
        if pairs.len() > 1 {
            out += &format!(
                "<h2>Models</h2>\n{}<p>{}</p>\n",
                html_table(&views::models(r)),
                esc(views::MODELS_NOTE)
            );
        } else {
            out += "<h2>Scores</h2>\n";
            out += &html_table(&views::scores(r, "macro"));
        }
        let charts = [
            ("Quality against latency", charts::pareto(r)),
            ("Scores per task", charts::task_scores(r)),
            ("Retention per task", charts::retention(r)),
            ("Batch-1 latency distribution", charts::latency_cdf(r)),
            ("Memory and energy", charts::memory_and_energy(r)),
        ];
        if charts.iter().any(|(_, svg)| !svg.is_empty()) {
            out += "<h2>Charts</h2>\n";
        }
        for (caption, svg) in charts {
            if !svg.is_empty() {
                out += &format!("<h3>{caption}</h3>\n{svg}");
            }
        }
        if pairs.len() == 1 {
            out += &pair_sections(r, 2);
        } else {
            for p in &pairs {
                out += &format!(
                    "<h2>{} against the teacher</h2>\n{}",
                    esc(&p.student.display()),
                    html_table(&views::scores(p, "macro"))
                );
                out += &pair_sections(p, 3);
            }
        }
        if let Some(env) = &r.environment {
            out += &format!(
                "<p class=\"env\">Measured on {} ({} logical cores, {} threads), {}, candle {}, {} build, device {}.</p>\n",
                esc(&env.cpu_model),
                env.logical_cores,
                env.threads_used,
                esc(&env.os),
                esc(&env.candle_version),
                esc(&env.build_profile),
                esc(&env.device)
            );
            if !env.kernels.is_empty() {
                out += "<p class=\"env\">Kernels by weight format: ";
                let lines: Vec<String> = env
                    .kernels
                    .iter()
                    .map(|(f, k)| format!("<b>{}</b>: {}", esc(f), esc(k)))
                    .collect();
                out += &lines.join("; ");
                out += ".</p>\n";
            }
        }
        out + "</body></html>\n"
    }
}

/// A pair's tables (cost, LLM accuracy, language modelling, paired statistics, tasks not
/// scored) with headings at level `h` (their sub-headings one below).
fn pair_sections(r: &Results, h: usize) -> String {
    let sub = h + 1;
    let mut out = String::new();
    if let Some(v) = views::costs(r) {
        out += &format!(
            "<h{h}>Cost</h{h}>\n{}<p>{}</p>\n",
            html_table(&v),
            esc(views::COST_NOTE)
        );
    }
    if let Some(v) = views::llm_accuracy(r) {
        out += &format!(
            "<h{h}>LLM accuracy</h{h}>\n{}<p>{}</p>\n",
            html_table(&v),
            esc(views::LLM_ACCURACY_NOTE)
        );
    }
    if let Some(v) = views::language_modelling(r) {
        out += &format!("<h{h}>Language modelling</h{h}>\n{}", html_table(&v));
        if let Some(f) = views::token_fidelity(r) {
            out += &html_table(&f);
        }
        if let Some(k) = views::kl_statistics(r) {
            out += &format!("{}<p>{}</p>\n", html_table(&k), esc(views::KL_NOTE));
        }
        out += &format!("<p>{}</p>\n", esc(views::LM_NOTE));
    }
    if let Some(v) = views::paired(r) {
        out += &format!(
            "<h{h}>Student against teacher</h{h}>\n{}<p>{}</p>\n",
            html_table(&v),
            esc(views::PAIRED_NOTE)
        );
        let examples = views::disagreements(r, 5);
        if !examples.is_empty() {
            out += &format!("<h{sub}>First disagreements</h{sub}><ul>");
            for e in examples {
                out += &format!("<li>{}</li>", esc(&e));
            }
            out += "</ul>\n";
        }
    }
    if !r.skipped.is_empty() {
        out += &format!("<h{h}>Not scored</h{h}><ul>");
        for (t, why) in &r.skipped {
            out += &format!("<li><b>{}</b>: {}</li>", esc(t), esc(why));
        }
        out += "</ul>\n";
    }
    out
}

/// `harness profile`'s sweep as a page of throughput curves and its table.
pub fn sweep_page(p: &crate::ProfileSweep) -> String {
    let names: Vec<String> = p
        .models
        .iter()
        .map(|m| esc(&crate::schema::display_name(&m.id)))
        .collect();
    let env = &p.environment;
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>distill-harness profile: {}</title><style>{STYLE}</style></head><body>\n<h1>distill-harness profile</h1>\n<dl class=\"header\"><dt>date</dt><dd>{}</dd><dt>models</dt><dd>{}</dd><dt>machine</dt><dd>{}</dd><dt>settings</dt><dd>{} warm-up passes, at least {} timed passes and {} s per shape</dd></dl>\n<h2>Throughput against batch size</h2>\n{}</body></html>\n",
        names.join(", "),
        utc_date(p.created_unix_s),
        names.join(", "),
        esc(&format!(
            "{} ({} logical cores, {} threads), {} build",
            env.cpu_model, env.logical_cores, env.threads_used, env.build_profile
        )),
        p.settings.warmup_iterations,
        p.settings.min_iterations,
        p.settings.min_time_s,
        charts::sweep(p)
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:960px;color:#222}table{border-collapse:collapse;margin:1em 0;display:block;overflow-x:auto;max-width:100%}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}.chart{display:block;margin:1em 0;max-width:100%;height:auto}dl.header{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:14px}dl.header dt{color:#666}dl.header dd{margin:0}@media print{body{margin:0;max-width:none}.chart{break-inside:avoid}}";

/// The date of a Unix time, `YYYY-MM-DD HH:MM UTC` (Howard Hinnant's civil-from-days).
pub fn utc_date(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// The header: when, from which commit, with which settings, on which machine.
fn header(r: &Results) -> String {
    let st = &r.settings;
    let mut rows = vec![
        ("date", utc_date(r.created_unix_s)),
        (
            "harness",
            format!(
                "{}{}",
                r.harness_version,
                r.git_commit.as_deref().map_or(String::new(), |c| format!(
                    " (commit {})",
                    &c[..c.len().min(12)]
                ))
            ),
        ),
        (
            "settings",
            format!(
                "batch size {}, max length {}, {} on {}, data {}{}",
                st.batch_size,
                st.max_length
                    .map_or("model maximum".into(), |m| m.to_string()),
                st.dtype,
                st.device,
                st.data_source,
                st.limit
                    .map_or(String::new(), |n| format!(", first {n} examples per task"))
            ),
        ),
    ];
    if let Some(env) = &r.environment {
        rows.push((
            "machine",
            format!(
                "{} ({} logical cores, {} threads), {}, {} build",
                env.cpu_model, env.logical_cores, env.threads_used, env.os, env.build_profile
            ),
        ));
    }
    let mut s = String::from("<dl class=\"header\">");
    for (k, v) in rows {
        s += &format!("<dt>{k}</dt><dd>{}</dd>", esc(&v));
    }
    s + "</dl>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_contained_with_a_header_and_every_chart() {
        let mut r = crate::schema::tests::sample();
        crate::schema::tests::add_profiles(&mut r);
        let html = HtmlReport.render(&r);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<script"), "no scripts");
        assert!(
            !html.contains("http://")
                || html.matches("http://").count()
                    == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
            "no external resources"
        );
        for caption in [
            "Quality against latency",
            "Scores per task",
            "Retention per task",
            "Batch-1 latency distribution",
            "Memory and energy",
        ] {
            assert!(html.contains(&format!("<h3>{caption}</h3>")), "{caption}");
        }
        // pareto, scores, retention, a CDF per task (2), memory, energy.
        assert_eq!(html.matches("<svg").count(), 7);
        assert!(
            html.contains("<dt>date</dt><dd>2027-01-15 08:00 UTC</dd>"),
            "{html}"
        );
        assert!(html.contains("(commit abc123)"));
        assert!(html.contains("<td>95.0%</td>"));
        assert!(
            html.contains("<h2>Cost</h2>"),
            "the cost table is there too"
        );
    }

    #[test]
    fn a_run_of_several_students_has_the_models_table_and_a_section_per_student() {
        let html = HtmlReport.render(&crate::schema::tests::several_students());
        assert!(html.contains("students <b>student, student-2, student-3</b>"));
        assert!(html.contains("<h2>Models</h2>"));
        for name in ["student", "student-2", "student-3"] {
            assert!(
                html.contains(&format!("<h2>{name} against the teacher</h2>")),
                "{name}"
            );
        }
        assert_eq!(html.matches("<h3>Cost</h3>").count(), 3);
        // One point per model in the trade-off chart.
        let pareto = &html[html.find("<h3>Quality against latency</h3>").unwrap()..];
        let pareto = &pareto[..pareto.find("</svg>").unwrap()];
        assert_eq!(pareto.matches("<circle").count(), 4);
    }

    #[test]
    fn escapes_model_names() {
        let mut r = crate::schema::tests::sample();
        r.teacher.id = "<b>&".into();
        assert!(HtmlReport.render(&r).contains("&lt;b&gt;&amp;"));
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        // 2000-02-29 12:34 UTC, a leap day.
        assert_eq!(utc_date(951_827_640), "2000-02-29 12:34 UTC");
        assert_eq!(utc_date(1_800_000_000), "2027-01-15 08:00 UTC");
    }
}
