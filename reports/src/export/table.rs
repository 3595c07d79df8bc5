//! A GitHub-flavoured Markdown table builder shared by the text formats.

/// Column alignment.
#[derive(Clone, Copy)]
pub enum Align {
    Left,
    Right,
}

/// Render a table with padded columns so it also reads well as plain text. A `|` inside a
/// cell is escaped so that it cannot split the cell (`KL(t||s)`).
pub fn markdown_table(headers: &[&str], align: &[Align], rows: &[Vec<String>]) -> String {
    let escaped: Vec<String> = headers.iter().map(|h| h.replace('|', "\\|")).collect();
    let headers: Vec<&str> = escaped.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| c.replace('|', "\\|")).collect())
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].chars().count(), 3])
                .max()
                .unwrap_or(3)
        })
        .collect();
    let pad = |s: &str, i: usize| {
        let fill = widths[i] - s.chars().count();
        match align[i] {
            Align::Left => format!("{s}{}", " ".repeat(fill)),
            Align::Right => format!("{}{s}", " ".repeat(fill)),
        }
    };
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut out = line(headers.iter().enumerate().map(|(i, h)| pad(h, i)).collect());
    out += &line(
        widths
            .iter()
            .zip(align)
            .map(|(w, a)| match a {
                Align::Left => "-".repeat(*w),
                Align::Right => format!("{}:", "-".repeat(w - 1)),
            })
            .collect(),
    );
    for r in &rows {
        out += &line(r.iter().enumerate().map(|(i, c)| pad(c, i)).collect());
    }
    out
}
