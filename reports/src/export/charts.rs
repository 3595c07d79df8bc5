//! The HTML report's charts, each a function from a results file to one inline SVG (empty
//! when the file lacks what the chart needs): the accuracy-latency trade-off with its Pareto
//! frontier, each task's scores with their 95% intervals, retention on an axis around 100%,
//! the batch-1 latency distribution (CDF of the raw samples), memory and energy, and the
//! throughput sweep of `harness profile`. Models keep one colour across charts: the
//! teacher's first, then each student's in order.

use std::collections::BTreeMap;

use super::svg::{self, colour, esc, Axis, LEFT, RIGHT, W};
use crate::stats::Interval;
#[cfg(test)]
use crate::TaskResult;
use crate::{Cell, ProfileSweep, Results};

/// One model of the file as the charts see it: its name and, per task, its cell and its own
/// 95% interval on the primary metric (when the comparison recorded one).
struct Model<'a> {
    name: String,
    cells: BTreeMap<&'a str, &'a Cell>,
    intervals: BTreeMap<&'a str, Interval>,
}

/// The teacher, then each student.
fn models(pairs: &[Results]) -> Vec<Model<'_>> {
    let mut out = Vec::new();
    let teacher = Model {
        name: pairs[0].teacher.display(),
        cells: pairs[0]
            .tasks
            .iter()
            .map(|(k, t)| (k.as_str(), &t.teacher))
            .collect(),
        intervals: pairs[0]
            .tasks
            .iter()
            .filter_map(|(k, t)| Some((k.as_str(), t.comparison.as_ref()?.teacher_interval?)))
            .collect(),
    };
    out.push(teacher);
    for p in pairs {
        out.push(Model {
            name: p.student.display(),
            cells: p
                .tasks
                .iter()
                .map(|(k, t)| (k.as_str(), &t.student))
                .collect(),
            intervals: p
                .tasks
                .iter()
                .filter_map(|(k, t)| Some((k.as_str(), t.comparison.as_ref()?.student_interval?)))
                .collect(),
        });
    }
    out
}

fn names(models: &[Model]) -> Vec<String> {
    models.iter().map(|m| m.name.clone()).collect()
}

/// Tasks whose batch-1 pass every model ran: the common ground of any cross-model figure.
fn profiled_everywhere<'a>(r: &'a Results, models: &[Model]) -> Vec<&'a str> {
    r.tasks
        .keys()
        .map(String::as_str)
        .filter(|t| {
            models
                .iter()
                .all(|m| m.cells.get(t).is_some_and(|c| c.profile.is_some()))
        })
        .collect()
}

/// Indices of the points on the Pareto frontier: none faster is at least as good. `better`
/// says whether a score beats another (higher, or lower for perplexity).
pub fn pareto_front(points: &[(f64, f64)], lower_is_better: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(if lower_is_better {
                points[a].1.total_cmp(&points[b].1)
            } else {
                points[b].1.total_cmp(&points[a].1)
            })
    });
    let mut front = Vec::new();
    let mut best: Option<f64> = None;
    for i in order {
        let y = points[i].1;
        let beats = match best {
            None => true,
            Some(b) if lower_is_better => y < b,
            Some(b) => y > b,
        };
        if beats {
            front.push(i);
            best = Some(y);
        }
    }
    front
}

/// Accuracy against latency: one point per model (macro score, or for a run of language-model
/// tasks only, the first perplexity, against the mean batch-1 p50 latency over the tasks
/// every model was profiled on) and the Pareto frontier through the models no faster one
/// beats.
pub fn pareto(r: &Results) -> String {
    let pairs = r.pairs();
    let ms = models(&pairs);
    let common = profiled_everywhere(r, &ms);
    if common.is_empty() {
        return String::new();
    }
    // What "quality" is: the macro score, or a perplexity (lower is better).
    let ppl_task = r
        .tasks
        .iter()
        .find(|(k, t)| t.lower_is_better && common.contains(&k.as_str()));
    let (scores, y_title, lower): (Vec<f64>, String, bool) = if r.macro_score.is_some() {
        let mut v = vec![r
            .macro_score
            .as_ref()
            .map_or(f64::NAN, |m| m.teacher * 100.0)];
        v.extend(pairs.iter().map(|p| {
            p.macro_score
                .as_ref()
                .map_or(f64::NAN, |m| m.student * 100.0)
        }));
        (v, "macro score x100".into(), false)
    } else if let Some((task, t)) = ppl_task {
        let metric = &t.primary_metric;
        let v = ms
            .iter()
            .map(|m| {
                m.cells
                    .get(task.as_str())
                    .and_then(|c| c.metrics.get(metric).copied())
                    .unwrap_or(f64::NAN)
            })
            .collect();
        (v, format!("{task} {metric} (lower is better)"), true)
    } else {
        return String::new();
    };
    let pts: Vec<(f64, f64)> = ms
        .iter()
        .zip(&scores)
        .map(|(m, &y)| {
            let lat: f64 = common
                .iter()
                .map(|t| {
                    m.cells[t]
                        .profile
                        .as_ref()
                        .map_or(0.0, |p| p.latency_ms.p50)
                })
                .sum::<f64>()
                / common.len() as f64;
            (lat, y)
        })
        .collect();
    if pts.iter().any(|p| !p.1.is_finite()) {
        return String::new();
    }
    let h = 340.0;
    let (top, bottom) = (44.0, h - 52.0);
    let (x0, x1) = (LEFT, W - RIGHT);
    let xa = Axis::from_zero(pts.iter().map(|p| p.0).fold(0.0, f64::max) * 1.1, 5);
    let (ylo, yhi) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let pad = ((yhi - ylo) * 0.15).max(0.5);
    let ya = Axis::covering(ylo - pad, yhi + pad, 4);
    let mut s = svg::open(
        "Quality against batch-1 latency, with the Pareto frontier",
        h,
    );
    s += &svg::legend(&names(&ms), x0, 18.0);
    s += &svg::y_axis(&ya, x0, x1, bottom, top, &y_title);
    s += &svg::x_axis(
        &xa,
        x0,
        x1,
        bottom,
        &format!("batch-1 latency p50 (ms, mean over {})", common.join(", ")),
    );
    let front = pareto_front(&pts, lower);
    let line: Vec<String> = front
        .iter()
        .map(|&i| {
            format!(
                "{:.1},{:.1}",
                xa.map(pts[i].0, x0, x1),
                ya.map(pts[i].1, bottom, top)
            )
        })
        .collect();
    s += &format!(
        "<polyline class=\"frontier\" points=\"{}\"/>\n",
        line.join(" ")
    );
    let centres: Vec<(f64, f64)> = pts
        .iter()
        .map(|&(lat, y)| (xa.map(lat, x0, x1), ya.map(y, bottom, top)))
        .collect();
    let widths: Vec<f64> = ms.iter().map(|m| label_width(&m.name)).collect();
    let spots = place_labels(&centres, &widths, (x0, x1));
    for (i, (m, &(lat, y))) in ms.iter().zip(&pts).enumerate() {
        let (cx, cy) = centres[i];
        let on = if front.contains(&i) {
            ", on the frontier"
        } else {
            ""
        };
        let (lx, ly, anchor) = spots[i];
        s += &format!(
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"6\" fill=\"{}\"><title>{}: {lat:.2} ms, {y:.2}{on}</title></circle><text x=\"{lx:.1}\" y=\"{ly:.1}\"{anchor}>{}</text>\n",
            colour(i),
            esc(&m.name),
            esc(&m.name)
        );
    }
    s + "</svg>\n"
}

/// Width in px of a point label at the charts' 11 px sans-serif (a little over the average
/// glyph, so estimates err towards more room).
fn label_width(text: &str) -> f64 {
    6.3 * text.chars().count() as f64
}

/// Where each point's label goes: the first of above-right, below-right, above-left and
/// below-left of the point whose box overlaps no label placed before it and stays inside
/// `x_range`; when none is free, the one that overlaps least. Returns (x, y, text-anchor
/// attribute) per point. Without this, a quantized copy beside its original (same score,
/// nearby latency) prints both names over each other.
fn place_labels(
    centres: &[(f64, f64)],
    widths: &[f64],
    x_range: (f64, f64),
) -> Vec<(f64, f64, &'static str)> {
    const HEIGHT: f64 = 12.0;
    let overlap = |a: (f64, f64, f64, f64), b: (f64, f64, f64, f64)| {
        let w = (a.2.min(b.2) - a.0.max(b.0)).max(0.0);
        let h = (a.3.min(b.3) - a.1.max(b.1)).max(0.0);
        w * h
    };
    let mut placed: Vec<(f64, f64, f64, f64)> = Vec::new();
    let mut out = Vec::new();
    for (&(cx, cy), &w) in centres.iter().zip(widths) {
        // (text x, baseline y, right-anchored?)
        let candidates = [
            (cx + 9.0, cy - 8.0, false),
            (cx + 9.0, cy + 18.0, false),
            (cx - 9.0, cy - 8.0, true),
            (cx - 9.0, cy + 18.0, true),
        ];
        let boxed = |&(x, y, end): &(f64, f64, bool)| {
            let left = if end { x - w } else { x };
            (left, y - HEIGHT + 2.0, left + w, y + 2.0)
        };
        let cost = |c: &(f64, f64, bool)| {
            let b = boxed(c);
            let spill = (x_range.0 - b.0).max(0.0) + (b.2 - x_range.1).max(0.0);
            placed.iter().map(|&p| overlap(b, p)).sum::<f64>() + spill * HEIGHT
        };
        let best = candidates
            .iter()
            .find(|c| cost(c) == 0.0)
            .or_else(|| candidates.iter().min_by(|a, b| cost(a).total_cmp(&cost(b))))
            .copied()
            .expect("four candidates");
        placed.push(boxed(&best));
        out.push((
            best.0,
            best.1,
            if best.2 { " text-anchor=\"end\"" } else { "" },
        ));
    }
    out
}

/// Each task's primary score (x100) per model as horizontal bars from zero, with the model's
/// 95% bootstrap interval as a whisker where the comparison recorded one.
pub fn task_scores(r: &Results) -> String {
    let pairs = r.pairs();
    let ms = models(&pairs);
    let tasks: Vec<&str> = r
        .tasks
        .iter()
        .filter(|(_, t)| t.in_macro())
        .map(|(k, _)| k.as_str())
        .collect();
    if tasks.is_empty() {
        return String::new();
    }
    let bar = 14.0;
    let group = bar * ms.len() as f64 + 16.0;
    let (top, label_w) = (40.0, 110.0);
    let h = top + group * tasks.len() as f64 + 44.0;
    let (x0, x1) = (LEFT + label_w - 40.0, W - RIGHT - 40.0);
    let score = |m: &Model, t: &str| -> Option<f64> {
        let metric = &r.tasks[t].primary_metric;
        m.cells.get(t)?.metrics.get(metric).map(|v| v * 100.0)
    };
    let hi = tasks
        .iter()
        .flat_map(|t| {
            ms.iter()
                .flat_map(move |m| [score(m, t), m.intervals.get(t).map(|i| i.high * 100.0)])
        })
        .flatten()
        .fold(0.0, f64::max);
    let xa = Axis::from_zero(hi.max(1.0), 5);
    let bottom = h - 44.0;
    let mut s = svg::open("Scores per task with 95% intervals", h);
    s += &svg::legend(&names(&ms), LEFT, 18.0);
    for t in xa.ticks() {
        let x = xa.map(t, x0, x1);
        s += &format!("<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>\n");
    }
    for (ti, task) in tasks.iter().enumerate() {
        let gy = top + group * ti as f64;
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            x0 - 8.0,
            gy + group / 2.0,
            esc(task)
        );
        for (mi, m) in ms.iter().enumerate() {
            let Some(v) = score(m, task) else { continue };
            let y = gy + 4.0 + bar * mi as f64;
            let ci = m.intervals.get(task);
            let ci_text = ci.map_or(String::new(), |i| {
                format!(" [{:.2}, {:.2}]", i.low * 100.0, i.high * 100.0)
            });
            s += &format!(
                "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {task}: {v:.2}{ci_text}</title></rect>",
                (xa.map(v, x0, x1) - x0).max(0.5),
                bar - 2.0,
                colour(mi),
                esc(&m.name),
            );
            let mut end = xa.map(v, x0, x1);
            if let Some(i) = ci {
                let (a, b) = (
                    xa.map(i.low * 100.0, x0, x1),
                    xa.map(i.high * 100.0, x0, x1),
                );
                let cy = y + (bar - 2.0) / 2.0;
                s += &format!(
                    "<line class=\"ci\" x1=\"{a:.1}\" y1=\"{cy:.1}\" x2=\"{b:.1}\" y2=\"{cy:.1}\"/><line class=\"ci\" x1=\"{a:.1}\" y1=\"{:.1}\" x2=\"{a:.1}\" y2=\"{:.1}\"/><line class=\"ci\" x1=\"{b:.1}\" y1=\"{:.1}\" x2=\"{b:.1}\" y2=\"{:.1}\"/>",
                    cy - 3.0,
                    cy + 3.0,
                    cy - 3.0,
                    cy + 3.0
                );
                end = end.max(b);
            }
            s += &format!(
                "<text class=\"value\" x=\"{:.1}\" y=\"{:.1}\">{v:.1}</text>\n",
                end + 4.0,
                y + bar - 4.0
            );
        }
    }
    s + &svg::x_axis(
        &xa,
        x0,
        x1,
        bottom,
        "primary metric x100 (whiskers: 95% paired-bootstrap interval)",
    ) + "</svg>\n"
}

/// Retention per task and student as bars from the 100% line, on an axis that spans the
/// retentions themselves (97% and 99.8% look different), with the macro retention last.
pub fn retention(r: &Results) -> String {
    let pairs = r.pairs();
    let mut rows: Vec<(String, Vec<(usize, f64)>)> = r
        .tasks
        .keys()
        .map(|task| {
            let v = pairs
                .iter()
                .enumerate()
                .filter_map(|(i, p)| Some((i + 1, p.tasks.get(task)?.retention?)))
                .filter(|(_, v)| v.is_finite())
                .collect();
            (task.clone(), v)
        })
        .collect();
    let macro_row: Vec<(usize, f64)> = pairs
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i + 1, p.macro_score.as_ref()?.retention?)))
        .collect();
    if !macro_row.is_empty() {
        rows.push(("macro".into(), macro_row));
    }
    rows.retain(|(_, v)| !v.is_empty());
    if rows.is_empty() {
        return String::new();
    }
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|(_, v)| v.iter().map(|x| x.1 * 100.0))
        .collect();
    let lo = all.iter().copied().fold(100.0, f64::min);
    let hi = all.iter().copied().fold(100.0, f64::max);
    let pad = ((hi - lo) * 0.1).max(0.5);
    let xa = Axis::covering(lo - pad, hi + pad, 5);
    let bar = 14.0;
    let per = pairs.len() as f64;
    let group = bar * per + 12.0;
    let top = if pairs.len() > 1 { 36.0 } else { 12.0 };
    let h = top + group * rows.len() as f64 + 48.0;
    let bottom = h - 48.0;
    let (x0, x1) = (LEFT + 60.0, W - RIGHT - 50.0);
    let mut s = svg::open("Retention per task (student / teacher)", h);
    if pairs.len() > 1 {
        let students: Vec<String> = pairs.iter().map(|p| p.student.display()).collect();
        // Students keep their colours (the teacher's is the first).
        let entries: Vec<(usize, &str)> = students
            .iter()
            .enumerate()
            .map(|(i, n)| (i + 1, n.as_str()))
            .collect();
        s += &svg::legend_of(&entries, LEFT, 18.0);
    }
    for t in xa.ticks() {
        let x = xa.map(t, x0, x1);
        s += &format!("<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>\n");
    }
    let x100 = xa.map(100.0, x0, x1);
    for (ri, (name, vals)) in rows.iter().enumerate() {
        let gy = top + group * ri as f64;
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            x0 - 8.0,
            gy + group / 2.0,
            esc(name)
        );
        for (k, &(ci, v)) in vals.iter().enumerate() {
            let y = gy + 4.0 + bar * k as f64;
            let x = xa.map(v * 100.0, x0, x1);
            let (a, b) = (x.min(x100), x.max(x100));
            let label = format!("{:.1}%", v * 100.0);
            s += &format!(
                "<rect x=\"{a:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {label}</title></rect><text class=\"value\" x=\"{:.1}\" y=\"{:.1}\">{label}</text>\n",
                (b - a).max(1.0),
                bar - 2.0,
                colour(ci),
                esc(&pairs[ci - 1].student.display()),
                esc(name),
                b + 4.0,
                y + bar - 4.0
            );
        }
    }
    s += &format!(
        "<line class=\"ref\" x1=\"{x100:.1}\" y1=\"{:.1}\" x2=\"{x100:.1}\" y2=\"{bottom:.1}\"/>\n",
        top - 4.0
    );
    s + &svg::x_axis(
        &xa,
        x0,
        x1,
        bottom,
        "retention (%), 100% = the teacher's score",
    ) + "</svg>\n"
}

/// Points of an empirical CDF, at most `max` of them (quantiles of the sorted samples).
pub fn ecdf_points(samples: &[f64], max: usize) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Vec::new();
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let k = n.min(max.max(2));
    (0..k)
        .map(|j| {
            let i = if k == n { j } else { j * (n - 1) / (k - 1) };
            (v[i], (i + 1) as f64 / n as f64)
        })
        .collect()
}

/// What one batch-1 latency sample of a task times: a perplexity window, a whole generation,
/// a multiple-choice question with all its choices, or one example.
fn latency_unit(t: &crate::schema::TaskResult) -> &'static str {
    match t.mode.as_str() {
        _ if t.lower_is_better => "window",
        "generate" => "prompt, whole generation,",
        "log_likelihood" => "question",
        _ => "example",
    }
}

/// The batch-1 latency distribution per task: each model's empirical CDF of its raw
/// per-example latencies (end to end), p50 and p95 readable off the grid.
pub fn latency_cdf(r: &Results) -> String {
    let pairs = r.pairs();
    let ms = models(&pairs);
    let mut out = String::new();
    for task in r.tasks.keys() {
        let curves: Vec<(usize, Vec<(f64, f64)>)> = ms
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let p = m.cells.get(task.as_str())?.profile.as_ref()?;
                let pts = ecdf_points(&p.latency_samples_ms, 200);
                (!pts.is_empty()).then_some((i, pts))
            })
            .collect();
        if curves.is_empty() {
            continue;
        }
        // The axis ends past the slowest model's p99: a long tail would squash the rest.
        let p99 = ms
            .iter()
            .filter_map(|m| m.cells.get(task.as_str())?.profile.as_ref())
            .map(|p| p.latency_ms.p99)
            .fold(0.0, f64::max);
        let xa = Axis::from_zero(p99 * 1.05, 5);
        let ya = Axis::covering(0.0, 1.0, 4);
        let h = 260.0;
        let (top, bottom, x0, x1) = (40.0, h - 52.0, LEFT, W - RIGHT);
        let mut s = svg::open(&format!("{task}: batch-1 latency distribution"), h);
        let shown: Vec<String> = curves.iter().map(|(i, _)| ms[*i].name.clone()).collect();
        let entries: Vec<(usize, &str)> = curves
            .iter()
            .zip(&shown)
            .map(|((i, _), n)| (*i, n.as_str()))
            .collect();
        s += &svg::legend_of(&entries, x0, 18.0);
        s += &svg::y_axis(&ya, x0, x1, bottom, top, "fraction at or below x");
        s += &svg::x_axis(
            &xa,
            x0,
            x1,
            bottom,
            &format!(
                "{task}: latency per {} (ms, end to end, batch 1)",
                latency_unit(&r.tasks[task])
            ),
        );
        for (i, pts) in &curves {
            let mut line = Vec::with_capacity(pts.len() * 2);
            let mut prev_y = 0.0;
            for &(x, y) in pts {
                let px = xa.map(x.min(xa.hi), x0, x1);
                // A step: across at the previous height, then up.
                line.push(format!("{px:.1},{:.1}", ya.map(prev_y, bottom, top)));
                line.push(format!("{px:.1},{:.1}", ya.map(y, bottom, top)));
                prev_y = y;
            }
            s += &format!(
                "<polyline class=\"cdf\" stroke=\"{}\" points=\"{}\"><title>{}</title></polyline>\n",
                colour(*i),
                line.join(" "),
                esc(&ms[*i].name)
            );
        }
        out += &(s + "</svg>\n");
    }
    out
}

/// A horizontal bar chart from zero: one bar per labelled value, in each model's colour.
fn bars(title: &str, axis_title: &str, rows: &[(usize, String, f64, String)]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let bar = 20.0;
    let top = 12.0;
    let h = top + (bar + 6.0) * rows.len() as f64 + 48.0;
    let bottom = h - 48.0;
    let (x0, x1) = (LEFT + 110.0, W - RIGHT - 130.0);
    let xa = Axis::from_zero(rows.iter().map(|r| r.2).fold(0.0, f64::max), 5);
    let mut s = svg::open(title, h);
    for (k, (i, label, v, text)) in rows.iter().enumerate() {
        let y = top + (bar + 6.0) * k as f64;
        let x = xa.map(*v, x0, x1);
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bar}\" fill=\"{}\"><title>{}: {}</title></rect><text class=\"value\" x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            x0 - 8.0,
            y + 14.0,
            esc(label),
            (x - x0).max(0.5),
            colour(*i),
            esc(label),
            esc(text),
            x + 4.0,
            y + 14.0,
            esc(text)
        );
    }
    s + &svg::x_axis(&xa, x0, x1, bottom, axis_title) + "</svg>\n"
}

/// Peak resident memory per model (the largest over its tasks) and energy per 1,000 examples
/// (mean over the tasks every model was profiled on, labelled with where it came from).
pub fn memory_and_energy(r: &Results) -> String {
    let pairs = r.pairs();
    let ms = models(&pairs);
    let mib = (1u64 << 20) as f64;
    let memory: Vec<(usize, String, f64, String)> = ms
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let peak = m
                .cells
                .values()
                .filter_map(|c| c.profile.as_ref()?.peak_rss_bytes)
                .max()?;
            let v = peak as f64 / mib;
            Some((i, m.name.clone(), v, format!("{v:.0} MiB")))
        })
        .collect();
    let common = profiled_everywhere(r, &ms);
    let energy: Vec<(usize, String, f64, String)> = ms
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let per: Vec<(f64, &str)> = common
                .iter()
                .filter_map(|t| {
                    let p = m.cells[t].profile.as_ref()?;
                    Some((p.energy_j_per_1k?, p.energy_source.as_str()))
                })
                .collect();
            if per.is_empty() || per.len() < common.len() {
                return None;
            }
            let v = per.iter().map(|x| x.0).sum::<f64>() / per.len() as f64;
            Some((i, m.name.clone(), v, format!("{v:.1} J ({})", per[0].1)))
        })
        .collect();
    let mut out = bars(
        "Peak resident memory per model",
        "peak RSS (MiB, largest over tasks)",
        &memory,
    );
    if energy.len() == ms.len() {
        out += &bars(
            "Energy per 1,000 examples",
            &format!("J per 1,000 examples (mean over {})", common.join(", ")),
            &energy,
        );
    }
    out
}

/// `harness profile`: sequences per second against batch size, one line per model and
/// sequence length (one chart per sequence length, so each has its own scale).
pub fn sweep(p: &ProfileSweep) -> String {
    let mut lens: Vec<usize> = p
        .models
        .iter()
        .flat_map(|m| m.points.iter().map(|x| x.seq_len))
        .collect();
    lens.sort();
    lens.dedup();
    let names: Vec<String> = p
        .models
        .iter()
        .map(|m| crate::schema::display_name(&m.id))
        .collect();
    let mut out = String::new();
    for len in lens {
        let series: Vec<(usize, Vec<(usize, f64)>)> = p
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut pts: Vec<(usize, f64)> = m
                    .points
                    .iter()
                    .filter(|x| x.seq_len == len)
                    .map(|x| (x.batch_size, x.sequences_per_s))
                    .collect();
                pts.sort_by_key(|x| x.0);
                (i, pts)
            })
            .filter(|(_, pts)| !pts.is_empty())
            .collect();
        let mut batches: Vec<usize> = series
            .iter()
            .flat_map(|(_, v)| v.iter().map(|x| x.0))
            .collect();
        batches.sort();
        batches.dedup();
        let ymax = series
            .iter()
            .flat_map(|(_, v)| v.iter().map(|x| x.1))
            .fold(0.0, f64::max);
        let ya = Axis::from_zero(ymax * 1.1, 4);
        let h = 280.0;
        let (top, bottom, x0, x1) = (40.0, h - 52.0, LEFT, W - RIGHT);
        // Batch sizes on a log2 scale, evenly spaced by their rank (1, 8, 32 are far apart).
        let x = |b: usize| -> f64 {
            let k = batches.iter().position(|&v| v == b).unwrap_or(0) as f64;
            let n = (batches.len().max(2) - 1) as f64;
            x0 + 20.0 + k / n * (x1 - x0 - 40.0)
        };
        let mut s = svg::open(&format!("Throughput against batch size, {len} tokens"), h);
        s += &svg::legend(&names, x0, 18.0);
        s += &svg::y_axis(&ya, x0, x1, bottom, top, "sequences / s");
        s += &format!("<line class=\"axis\" x1=\"{x0:.1}\" y1=\"{bottom:.1}\" x2=\"{x1:.1}\" y2=\"{bottom:.1}\"/>\n");
        for &b in &batches {
            s += &format!(
                "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{b}</text>\n",
                x(b),
                bottom + 16.0
            );
        }
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">batch size (sequences of {len} tokens)</text>\n",
            (x0 + x1) / 2.0,
            bottom + 34.0
        );
        for (i, pts) in &series {
            let line: Vec<String> = pts
                .iter()
                .map(|&(b, v)| format!("{:.1},{:.1}", x(b), ya.map(v, bottom, top)))
                .collect();
            s += &format!(
                "<polyline class=\"curve\" stroke=\"{}\" points=\"{}\"/>\n",
                colour(*i),
                line.join(" ")
            );
            for &(b, v) in pts {
                s += &format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{}\"><title>{} at batch {b}: {v:.1} sequences/s</title></circle>\n",
                    x(b),
                    ya.map(v, bottom, top),
                    colour(*i),
                    esc(&names[*i])
                );
            }
        }
        out += &(s + "</svg>\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_nearby_points_do_not_overlap() {
        // A quantized copy beside its original: same height, 30 px apart, long names.
        let centres = [(300.0, 100.0), (330.0, 100.0), (120.0, 200.0)];
        let widths = [130.0, 160.0, 100.0];
        let spots = place_labels(&centres, &widths, (60.0, 500.0));
        assert_eq!(
            spots[0],
            (309.0, 92.0, ""),
            "the first takes the default spot"
        );
        let boxes: Vec<(f64, f64, f64, f64)> = spots
            .iter()
            .zip(widths)
            .map(|(&(x, y, a), w)| {
                let left = if a.is_empty() { x } else { x - w };
                (left, y - 10.0, left + w, y + 2.0)
            })
            .collect();
        for a in 0..boxes.len() {
            for b in a + 1..boxes.len() {
                let (p, q) = (boxes[a], boxes[b]);
                let apart = p.2 <= q.0 || q.2 <= p.0 || p.3 <= q.1 || q.3 <= p.1;
                assert!(apart, "labels {a} and {b} overlap: {p:?} {q:?}");
            }
        }
        // A label that would leave the plot on the right is anchored at its end instead.
        let edge = place_labels(&[(480.0, 100.0)], &[100.0], (60.0, 500.0));
        assert_eq!(edge[0], (471.0, 92.0, " text-anchor=\"end\""));
    }

    /// Compare a chart with its committed snapshot in `reports/snapshots/`; with
    /// `UPDATE_SNAPSHOTS=1` the snapshot is rewritten instead (then look at it, in a browser,
    /// before committing).
    fn assert_snapshot(name: &str, svg: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("snapshots")
            .join(name);
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, svg).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "no snapshot {}; run with UPDATE_SNAPSHOTS=1 to write it",
                path.display()
            )
        });
        assert!(
            svg == expected,
            "{name} differs from {}; rerun with UPDATE_SNAPSHOTS=1 if the change is meant\n{svg}",
            path.display()
        );
    }

    fn with_intervals() -> Results {
        let mut r = crate::schema::tests::several_students();
        // The first student's comparison carries each model's interval.
        for t in r.tasks.values_mut() {
            let (tp, sp) = t.primary();
            let iv = |v: f64| Interval {
                estimate: v,
                low: v - 0.03,
                high: v + 0.02,
                level: 0.95,
                resamples: 1000,
            };
            t.comparison = Some(crate::Comparison {
                primary_diff: iv(sp - tp),
                teacher_interval: Some(iv(tp)),
                student_interval: Some(iv(sp)),
                teacher_only_correct: None,
                student_only_correct: None,
                mcnemar_p: None,
                top1_agreement: None,
                mean_kl: None,
                confusion: None,
                disagreements: Vec::new(),
                teacher_calibration: None,
                student_calibration: None,
            });
        }
        r
    }

    #[test]
    fn snapshot_of_each_chart() {
        let r = with_intervals();
        assert_snapshot("pareto.svg", &pareto(&r));
        assert_snapshot("task_scores.svg", &task_scores(&r));
        assert_snapshot("retention.svg", &retention(&r));
        let cdf = latency_cdf(&r);
        assert_snapshot("latency_cdf.svg", &cdf[..cdf.find("</svg>").unwrap() + 7]);
        assert_snapshot("memory_and_energy.svg", &memory_and_energy(&r));
    }

    #[test]
    fn snapshot_of_the_sweep_chart() {
        let point = |b: usize, v: f64| crate::SweepPoint {
            batch_size: b,
            seq_len: 128,
            iterations: 10,
            latency_ms: crate::LatencySummary {
                p50: 1.0,
                p90: 1.0,
                p95: None,
                p99: 1.0,
                mean: 1.0,
                stddev: 0.0,
                n: 10,
            },
            sequences_per_s: v,
            tokens_per_s: v * 128.0,
            flops_per_sequence: 1e9,
            gflops_per_s: v,
            peak_rss_bytes: None,
        };
        let r = crate::schema::tests::sample();
        let model = |id: &str, k: f64| crate::SweepModel {
            id: id.into(),
            checkpoint: crate::CheckpointInfo {
                id: id.into(),
                resolved: id.into(),
                architecture: "bert".into(),
                parameters: 1,
                bytes_on_disk: 1,
                head_labels: None,
                weight_bytes: None,
                quantization: None,
                kernels: Default::default(),
                tokenizer: None,
            },
            points: vec![point(1, 7.0 * k), point(8, 8.4 * k), point(32, 8.2 * k)],
            skipped: Vec::new(),
        };
        let sweep = ProfileSweep {
            schema_version: 1,
            harness_version: "0.1.0".into(),
            created_unix_s: r.created_unix_s,
            environment: crate::Environment {
                cpu_model: "test cpu".into(),
                cpu_flags: Vec::new(),
                logical_cores: 2,
                threads_used: 2,
                memory_bytes: None,
                os: "linux".into(),
                candle_version: "0".into(),
                build_profile: "release".into(),
                target_features: Vec::new(),
                git_commit: None,
                device: "cpu".into(),
                kernels: Default::default(),
            },
            settings: crate::SweepSettings {
                warmup_iterations: 2,
                min_iterations: 10,
                min_time_s: 10.0,
            },
            models: vec![model("bert-base", 1.0), model("distilbert", 2.0)],
        };
        let svg = sweep_chart_only(&sweep);
        assert_eq!(svg.matches("<polyline").count(), 2, "a curve per model");
        assert_eq!(
            svg.matches("<circle").count(),
            6,
            "a point per measured shape"
        );
        assert_snapshot("sweep.svg", &svg);
    }

    fn sweep_chart_only(p: &ProfileSweep) -> String {
        sweep(p)
    }

    #[test]
    fn a_run_of_language_model_tasks_only_still_has_its_trade_off_chart() {
        use crate::schema::tests::cell;
        let mut r = crate::schema::tests::sample();
        r.tasks.clear();
        let t = TaskResult::new(
            1,
            "perplexity",
            100,
            cell(crate::Mode::LogLikelihood, "perplexity", 30.0),
            cell(crate::Mode::LogLikelihood, "perplexity", 40.0),
        );
        r.tasks.insert("wikitext2".into(), t);
        crate::schema::tests::add_profiles(&mut r);
        let t = r.tasks.get_mut("wikitext2").unwrap();
        *t = t.clone().lower_is_better();
        r.update_macro();
        assert!(r.macro_score.is_none());
        let svg = pareto(&r);
        assert!(
            svg.contains("wikitext2 perplexity (lower is better)"),
            "{svg}"
        );
        assert_eq!(svg.matches("<circle").count(), 2);
    }

    #[test]
    fn the_frontier_keeps_the_models_no_faster_one_beats() {
        // (latency, score): the fastest, a slower better one, a slower worse one, the best.
        let pts = [(10.0, 70.0), (20.0, 80.0), (25.0, 75.0), (40.0, 82.0)];
        assert_eq!(pareto_front(&pts, false), [0, 1, 3]);
        // Perplexity: lower is better.
        let ppl = [(10.0, 30.0), (20.0, 25.0), (25.0, 28.0), (40.0, 20.0)];
        assert_eq!(pareto_front(&ppl, true), [0, 1, 3]);
        // A tie in latency: the better of the two only.
        assert_eq!(pareto_front(&[(10.0, 70.0), (10.0, 75.0)], false), [1]);
    }

    #[test]
    fn the_cdf_rises_to_one_in_at_most_max_points() {
        let samples: Vec<f64> = (1..=1000).rev().map(|v| v as f64).collect();
        let pts = ecdf_points(&samples, 200);
        assert_eq!(pts.len(), 200);
        assert_eq!(pts[0], (1.0, 0.001));
        assert_eq!(*pts.last().unwrap(), (1000.0, 1.0));
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let few = ecdf_points(&[3.0, 1.0, 2.0], 200);
        assert_eq!(few, [(1.0, 1.0 / 3.0), (2.0, 2.0 / 3.0), (3.0, 1.0)]);
        assert!(ecdf_points(&[], 10).is_empty());
    }
}
