//! One self-contained HTML file: tables plus inline SVG charts (no scripts, no network), so it
//! opens anywhere, from a CI artifact or an e-mail.
//!
//! Charts: accuracy (macro score) against batch-1 latency for every model in the file (the
//! Pareto view of the trade-off), per-task retention bars, and per-task latency ranges
//! (p50 to p99, with p90 marked) for each model.

use super::views::{self, TableView};
use super::{percent, points, Exporter};
use crate::Results;

pub struct HtmlReport;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 560.0;
const H: f64 = 300.0;
const PAD: f64 = 56.0;

fn svg_open(title: &str, height: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{W}\" height=\"{height}\" viewBox=\"0 0 {W} {height}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>\n",
        t = esc(title)
    )
}

/// Accuracy against latency: one point per model (macro score vs mean batch-1 p50 latency).
fn pareto_chart(r: &Results) -> String {
    let Some(m) = &r.macro_score else {
        return String::new();
    };
    let latency = |role: &str| -> Option<f64> {
        let v: Vec<f64> = r
            .tasks
            .values()
            .filter_map(|t| {
                if role == "teacher" {
                    &t.teacher
                } else {
                    &t.student
                }
                .profile
                .as_ref()
            })
            .map(|p| p.latency_ms.p50)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let pts: Vec<(&str, &str, f64, f64)> = [
        ("teacher", r.teacher.id.as_str(), m.teacher),
        ("student", r.student.id.as_str(), m.student),
    ]
    .into_iter()
    .filter_map(|(role, id, score)| latency(role).map(|l| (role, id, l, score)))
    .collect();
    if pts.is_empty() {
        return String::new();
    }
    let xmax = pts.iter().map(|p| p.2).fold(0.0, f64::max) * 1.2;
    let (ylo, yhi) = {
        let lo = pts.iter().map(|p| p.3).fold(f64::INFINITY, f64::min);
        let hi = pts.iter().map(|p| p.3).fold(f64::NEG_INFINITY, f64::max);
        let span = (hi - lo).max(0.02);
        ((lo - span * 0.5).max(-1.0), (hi + span * 0.5).min(1.0))
    };
    let x = |v: f64| PAD + (v / xmax) * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD - (v - ylo) / (yhi - ylo) * (H - 2.0 * PAD);
    let mut s = svg_open("Accuracy against latency", H);
    s += &format!(
        "<line class=\"axis\" x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/><line class=\"axis\" x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\"/>\n",
        b = H - PAD,
        r = W - PAD
    );
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">batch-1 latency p50 (ms, mean over tasks)</text>\n<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">macro score x100</text>\n",
        W / 2.0,
        H - 12.0,
        H / 2.0,
        H / 2.0
    );
    for i in 0..=4 {
        let v = xmax * i as f64 / 4.0;
        s += &format!(
            "<text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{v:.1}</text>\n",
            x(v),
            H - PAD + 16.0
        );
        let w = ylo + (yhi - ylo) * i as f64 / 4.0;
        s += &format!(
            "<text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.1}</text>\n",
            PAD - 6.0,
            y(w) + 4.0,
            w * 100.0
        );
    }
    for (role, id, l, score) in &pts {
        s += &format!(
            "<circle class=\"{role}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"7\"><title>{}: {:.2} ms, {}</title></circle>\n<text x=\"{:.1}\" y=\"{:.1}\">{role}</text>\n",
            x(*l),
            y(*score),
            esc(id),
            l,
            points(*score),
            x(*l) + 10.0,
            y(*score) - 10.0
        );
    }
    s + "</svg>\n"
}

/// Student retention per task, as horizontal bars against a 100% line.
fn retention_chart(r: &Results) -> String {
    let rows: Vec<(&String, f64)> = r
        .tasks
        .iter()
        .filter_map(|(n, t)| t.retention.map(|v| (n, v)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let height = PAD + 28.0 * rows.len() as f64 + 20.0;
    let xmax = rows.iter().map(|r| r.1).fold(1.0, f64::max) * 1.1;
    let x = |v: f64| 90.0 + v / xmax * (W - 140.0);
    let mut s = svg_open("Retention per task", height);
    for (i, (name, v)) in rows.iter().enumerate() {
        let top = 20.0 + 28.0 * i as f64;
        s += &format!(
            "<text x=\"84\" y=\"{:.1}\" text-anchor=\"end\">{}</text><rect class=\"bar\" x=\"90\" y=\"{top:.1}\" width=\"{:.1}\" height=\"20\"><title>{}: {}</title></rect><text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            top + 15.0,
            esc(name),
            x(*v) - 90.0,
            esc(name),
            percent(Some(*v)),
            x(*v) + 4.0,
            top + 15.0,
            percent(Some(*v))
        );
    }
    let hundred = x(1.0);
    s += &format!(
        "<line class=\"ref\" x1=\"{hundred:.1}\" y1=\"10\" x2=\"{hundred:.1}\" y2=\"{:.1}\"/><text class=\"tick\" x=\"{hundred:.1}\" y=\"{:.1}\" text-anchor=\"middle\">100%</text>\n",
        height - 30.0,
        height - 14.0
    );
    s + "</svg>\n"
}

/// Batch-1 latency ranges per task and model: a bar from p50 to p99 with a tick at p90.
fn latency_chart(r: &Results) -> String {
    let mut rows = Vec::new();
    for (name, t) in &r.tasks {
        for (role, cell) in [("teacher", &t.teacher), ("student", &t.student)] {
            if let Some(p) = &cell.profile {
                rows.push((
                    format!("{name} {role}"),
                    role,
                    p.latency_ms.p50,
                    p.latency_ms.p90,
                    p.latency_ms.p99,
                ));
            }
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let height = PAD + 24.0 * rows.len() as f64 + 20.0;
    let xmax = rows.iter().map(|r| r.4).fold(0.0, f64::max) * 1.1;
    let x = |v: f64| 130.0 + v / xmax * (W - 170.0);
    let mut s = svg_open("Batch-1 latency per example (p50 to p99)", height);
    for (i, (label, role, p50, p90, p99)) in rows.iter().enumerate() {
        let top = 20.0 + 24.0 * i as f64;
        s += &format!(
            "<text x=\"124\" y=\"{:.1}\" text-anchor=\"end\">{}</text><rect class=\"{role}\" x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"14\"><title>{}: p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms</title></rect><line class=\"p90\" x1=\"{:.1}\" y1=\"{top:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>\n",
            top + 12.0,
            esc(label),
            x(*p50),
            (x(*p99) - x(*p50)).max(2.0),
            esc(label),
            x(*p90),
            x(*p90),
            top + 14.0
        );
    }
    for i in 0..=4 {
        let v = xmax * i as f64 / 4.0;
        s += &format!("<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{v:.1} ms</text>\n", x(v), height - 14.0);
    }
    s + "</svg>\n"
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:960px;color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}.chart{display:block;margin:1em 0;font-size:12px}.axis{stroke:#333}.ref{stroke:#c00;stroke-dasharray:4 3}.bar{fill:#4c78a8}.teacher{fill:#4c78a8}.student{fill:#f58518}.p90{stroke:#000;stroke-width:2}.tick{fill:#555;font-size:11px}";

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
        let (t, s) = (esc(&r.teacher.id), esc(&r.student.id));
        let mut out = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>distill-harness: {t} vs {s}</title><style>{STYLE}</style></head><body>\n<h1>distill-harness</h1>\n<p>Teacher <b>{t}</b>, student <b>{s}</b>. Scores x100; retention is student / teacher on each task's primary metric.</p>\n"
        );
        if let Some(p) = views::provenance(r) {
            out += &format!("<p class=\"note\">{}</p>\n", esc(&p));
        }
        out += "<h2>Scores</h2>\n";
        out += &html_table(&views::scores(r, "macro"));
        let charts = [
            ("Accuracy against latency", pareto_chart(r)),
            ("Retention per task", retention_chart(r)),
            (
                "Batch-1 latency per example: p50 to p99, p90 marked",
                latency_chart(r),
            ),
        ];
        if charts.iter().any(|(_, svg)| !svg.is_empty()) {
            out += "<h2>Accuracy and speed</h2>\n";
        }
        for (caption, svg) in charts {
            if !svg.is_empty() {
                out += &format!("<h3>{caption}</h3>\n{svg}");
            }
        }
        if let Some(v) = views::costs(r) {
            out += &format!(
                "<h2>Cost</h2>\n{}<p>{}</p>\n",
                html_table(&v),
                esc(views::COST_NOTE)
            );
        }
        if let Some(v) = views::llm_accuracy(r) {
            out += &format!(
                "<h2>LLM accuracy</h2>\n{}<p>{}</p>\n",
                html_table(&v),
                esc(views::LLM_ACCURACY_NOTE)
            );
        }
        if let Some(v) = views::language_modelling(r) {
            out += &format!("<h2>Language modelling</h2>\n{}", html_table(&v));
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
                "<h2>Student against teacher</h2>\n{}<p>{}</p>\n",
                html_table(&v),
                esc(views::PAIRED_NOTE)
            );
            let examples = views::disagreements(r, 5);
            if !examples.is_empty() {
                out += "<h3>First disagreements</h3><ul>";
                for e in examples {
                    out += &format!("<li>{}</li>", esc(&e));
                }
                out += "</ul>\n";
            }
        }
        if !r.skipped.is_empty() {
            out += "<h2>Not scored</h2><ul>";
            for (t, why) in &r.skipped {
                out += &format!("<li><b>{}</b>: {}</li>", esc(t), esc(why));
            }
            out += "</ul>\n";
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_contained_with_charts() {
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
        assert_eq!(
            html.matches("<svg").count(),
            3,
            "pareto, retention, latency"
        );
        assert_eq!(html.matches("<circle").count(), 2, "one point per model");
        // Retention bars: one per task; latency ranges: one per task x model.
        assert_eq!(html.matches("<rect class=\"bar\"").count(), 2);
        assert_eq!(
            html.matches("<rect class=\"teacher\"").count()
                + html.matches("<rect class=\"student\"").count(),
            4
        );
        assert!(html.contains("<td>95.0%</td>"));
        assert!(
            html.contains("<h2>Cost</h2>"),
            "the cost table is there too"
        );
        assert!(html.contains("<h3>Retention per task</h3>"));
    }

    #[test]
    fn escapes_model_names() {
        let mut r = crate::schema::tests::sample();
        r.teacher.id = "<b>&".into();
        assert!(HtmlReport.render(&r).contains("&lt;b&gt;&amp;"));
    }
}
