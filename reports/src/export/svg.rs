//! The pieces every inline SVG chart shares: escaping, "nice" axis ticks (steps of 1, 2 or 5
//! times a power of ten, so an axis reads 79 / 80 / 81, never 79.4 / 81.0 / 82.6), a linear
//! scale, one colour per model and a legend. Charts are plain SVG 1.1 with `<title>` tooltips:
//! no scripts, readable when printed.

/// Escape text for HTML and SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Chart width in px (the report's column is 960 px wide).
pub const W: f64 = 640.0;
/// Left margin: room for tick labels and the axis title.
pub const LEFT: f64 = 64.0;
/// Right margin.
pub const RIGHT: f64 = 24.0;

/// How chart elements are drawn; inside each chart, so that one copied out of the report
/// (or opened from a snapshot) looks the same.
pub const CHART_STYLE: &str = "text{font-family:system-ui,sans-serif;font-size:12px;fill:#222}.axis{stroke:#333}.grid{stroke:#e4e4e4}.ref{stroke:#c00;stroke-dasharray:4 3}.ci{stroke:#222;stroke-width:1.5}.frontier{fill:none;stroke:#777;stroke-width:1.5;stroke-dasharray:5 4}.cdf,.curve{fill:none;stroke-width:2}.tick,.value{fill:#555;font-size:11px}";

/// The opening tag of a chart `height` px tall, with its title for screen readers.
pub fn open(title: &str, height: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{W}\" height=\"{height}\" viewBox=\"0 0 {W} {height}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title><style>{CHART_STYLE}</style>\n",
        t = esc(title)
    )
}

/// A step of 1, 2 or 5 x 10^k giving about `n` intervals over `span`.
pub fn nice_step(span: f64, n: usize) -> f64 {
    if !(span > 0.0 && span.is_finite()) {
        return 1.0;
    }
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A linear axis from `lo` to `hi` (widened to whole steps) with its ticks.
#[derive(Debug, Clone)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub step: f64,
}

impl Axis {
    /// An axis covering `[lo, hi]` with about `n` nice intervals; a zero span gets one step
    /// either side.
    pub fn covering(lo: f64, hi: f64, n: usize) -> Axis {
        let (lo, hi) = if hi > lo {
            (lo, hi)
        } else {
            (lo - 0.5, hi + 0.5)
        };
        let step = nice_step(hi - lo, n);
        Axis {
            lo: (lo / step).floor() * step,
            hi: (hi / step).ceil() * step,
            step,
        }
    }

    /// An axis from zero (sizes, times, memory: bars must start at zero to compare lengths).
    pub fn from_zero(hi: f64, n: usize) -> Axis {
        Axis::covering(0.0, if hi > 0.0 { hi } else { 1.0 }, n)
    }

    /// The tick values, `lo` to `hi` inclusive.
    pub fn ticks(&self) -> Vec<f64> {
        let n = ((self.hi - self.lo) / self.step).round() as usize;
        let scale = 10f64.powi(self.decimals() as i32);
        (0..=n)
            .map(|i| {
                let v = self.lo + self.step * i as f64;
                // Snap float noise (0.30000000000000004) to the step's precision.
                (v * scale).round() / scale
            })
            .collect()
    }

    /// Where `v` falls between pixels `a` (at `lo`) and `b` (at `hi`).
    pub fn map(&self, v: f64, a: f64, b: f64) -> f64 {
        a + (v - self.lo) / (self.hi - self.lo) * (b - a)
    }

    /// Decimals the step needs (0.1 -> 1, 0.05 -> 2, 5 -> 0).
    fn decimals(&self) -> usize {
        if self.step >= 1.0 {
            0
        } else {
            (-self.step.log10() - 1e-9).ceil() as usize
        }
    }

    /// A tick label with as many decimals as the step needs.
    pub fn label(&self, v: f64) -> String {
        let decimals = self.decimals();
        format!("{v:.decimals$}")
    }
}

/// Fill colours, one per model: the teacher first, then each student (Tableau 10, which
/// stays apart in greyscale print by lightness).
pub const PALETTE: [&str; 8] = [
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2", "#72b7b2", "#9d755d", "#bab0ac",
];

/// The colour of model `i` (0: the teacher).
pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// A legend row at `y`: a swatch and a name per model (model `i` in colour `i`), left to
/// right from `x`.
pub fn legend(names: &[String], x: f64, y: f64) -> String {
    let entries: Vec<(usize, &str)> = names.iter().map(String::as_str).enumerate().collect();
    legend_of(&entries, x, y)
}

/// A legend of some models only: `(colour index, name)` each.
pub fn legend_of(entries: &[(usize, &str)], x: f64, y: f64) -> String {
    let mut s = String::from("<g class=\"legend\">");
    let mut at = x;
    for &(i, name) in entries {
        s += &format!(
            "<rect x=\"{at:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            y - 10.0,
            colour(i),
            at + 16.0,
            y,
            esc(name)
        );
        // Roughly 7 px a character at 12 px.
        at += 16.0 + 7.0 * name.chars().count() as f64 + 18.0;
    }
    s + "</g>\n"
}

/// The horizontal axis line at `y` from `x0` to `x1` with its ticks, labels and title.
pub fn x_axis(axis: &Axis, x0: f64, x1: f64, y: f64, title: &str) -> String {
    let mut s = format!(
        "<line class=\"axis\" x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{x1:.1}\" y2=\"{y:.1}\"/>\n"
    );
    for t in axis.ticks() {
        let x = axis.map(t, x0, x1);
        s += &format!(
            "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/><text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            y + 4.0,
            y + 16.0,
            axis.label(t)
        );
    }
    s + &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
        (x0 + x1) / 2.0,
        y + 34.0,
        esc(title)
    )
}

/// The vertical axis line at `x` from `y0` (bottom, at `lo`) to `y1` (top), with light grid
/// lines across to `x_end`, tick labels and a rotated title.
pub fn y_axis(axis: &Axis, x: f64, x_end: f64, y0: f64, y1: f64, title: &str) -> String {
    let mut s = format!(
        "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{y1:.1}\"/>\n"
    );
    for t in axis.ticks() {
        let y = axis.map(t, y0, y1);
        s += &format!(
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{x_end:.1}\" y2=\"{y:.1}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            x - 6.0,
            y + 4.0,
            axis.label(t)
        );
    }
    let mid = (y0 + y1) / 2.0;
    s + &format!(
        "<text x=\"14\" y=\"{mid:.1}\" transform=\"rotate(-90 14 {mid:.1})\" text-anchor=\"middle\">{}</text>\n",
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_whole_steps_of_one_two_or_five() {
        let a = Axis::covering(79.4, 82.6, 4);
        assert_eq!((a.lo, a.hi, a.step), (79.0, 83.0, 1.0));
        assert_eq!(a.ticks(), [79.0, 80.0, 81.0, 82.0, 83.0]);
        assert_eq!(a.label(80.0), "80");
        let b = Axis::covering(0.12, 0.61, 5);
        assert_eq!(b.step, 0.1);
        assert_eq!(b.ticks(), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]);
        assert_eq!(b.label(0.3), "0.3");
        let c = Axis::from_zero(1234.0, 4);
        assert_eq!((c.lo, c.hi, c.step), (0.0, 1500.0, 500.0));
        // A single value still gets an axis around it.
        let d = Axis::covering(5.0, 5.0, 4);
        assert!(d.lo < 5.0 && d.hi > 5.0, "{d:?}");
        assert_eq!(nice_step(0.0, 4), 1.0);
    }

    #[test]
    fn map_is_linear_between_the_pixels() {
        let a = Axis::covering(0.0, 10.0, 5);
        assert_eq!(a.map(0.0, 100.0, 200.0), 100.0);
        assert_eq!(a.map(5.0, 100.0, 200.0), 150.0);
        // Upward axes map lo to the bottom pixel.
        assert_eq!(a.map(10.0, 300.0, 20.0), 20.0);
    }
}
