//! Token-level fidelity of a student to its teacher when both share a tokenizer, with the
//! statistics llama.cpp's `llama-perplexity --kl-divergence` reports: at every position,
//! KL(teacher || student) of the next-token distributions (mean with its standard error, and
//! percentiles), whether their top-1 predictions agree (with a binomial standard error), the
//! change Δp in the probability of the actual next token (llama.cpp's) and of the teacher's
//! top token (mean and RMS), the correlation of per-window ln PPL, and PPL(student) /
//! PPL(teacher) over the same tokens.
//!
//! Upstream: <https://github.com/ggml-org/llama.cpp/blob/master/tools/perplexity/perplexity.cpp>
//! (`kl_divergence`).

/// Running totals over positions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenFidelity {
    pub kl_sum: f64,
    pub agree: usize,
    pub positions: usize,
    /// KL at every position, for percentiles and the standard error.
    pub kls: Vec<f64>,
    /// p_student - p_teacher of the teacher's most likely token, per position.
    pub delta_top: Vec<f64>,
    /// p_student - p_teacher of the actual next token, per position that has one.
    pub delta_target: Vec<f64>,
    /// Summed -log p of the actual next tokens, teacher and student, and their count.
    pub nll_teacher: f64,
    pub nll_student: f64,
    pub targets: usize,
    /// Per window: (teacher ln PPL, student ln PPL).
    pub window_ln_ppl: Vec<(f64, f64)>,
    window: (f64, f64, usize),
}

fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let lse = crate::numeric::log_sum_exp(logits);
    logits.iter().map(|&l| l as f64 - lse).collect()
}

/// The `q`-quantile (0..1) of sorted values, linearly interpolated (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

/// Pearson correlation; `None` with fewer than two points or no spread.
pub fn pearson(pairs: &[(f64, f64)]) -> Option<f64> {
    let n = pairs.len() as f64;
    if pairs.len() < 2 {
        return None;
    }
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx).powi(2);
        syy += (y - my).powi(2);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// The percentiles llama.cpp prints for KL, as (percent, label).
pub const KL_PERCENTILES: &[(f64, &str)] = &[
    (100.0, "max"),
    (99.9, "99.9%"),
    (99.0, "99%"),
    (95.0, "95%"),
    (90.0, "90%"),
    (50.0, "median"),
    (10.0, "10%"),
    (5.0, "5%"),
    (1.0, "1%"),
    (0.1, "0.1%"),
    (0.0, "min"),
];

impl TokenFidelity {
    /// Add one position's logits (same vocabulary for both models), without a known next
    /// token.
    pub fn add(&mut self, teacher: &[f32], student: &[f32]) -> Result<(), String> {
        self.add_position(teacher, student, None)
    }

    /// Add one position's logits and, when the text goes on, the token that came next.
    pub fn add_position(
        &mut self,
        teacher: &[f32],
        student: &[f32],
        target: Option<u32>,
    ) -> Result<(), String> {
        if teacher.len() != student.len() {
            return Err(format!(
                "teacher and student vocabularies differ ({} vs {}); token-level fidelity needs a shared tokenizer",
                teacher.len(),
                student.len()
            ));
        }
        let (lt, ls) = (log_softmax(teacher), log_softmax(student));
        let kl = lt
            .iter()
            .zip(&ls)
            .map(|(a, b)| a.exp() * (a - b))
            .sum::<f64>();
        self.kl_sum += kl;
        self.kls.push(kl);
        let top = crate::numeric::argmax_f32(teacher);
        self.agree += usize::from(top == crate::numeric::argmax_f32(student));
        self.delta_top.push(ls[top].exp() - lt[top].exp());
        if let Some(t) = target.map(|t| t as usize).filter(|&t| t < lt.len()) {
            self.delta_target.push(ls[t].exp() - lt[t].exp());
            self.nll_teacher -= lt[t];
            self.nll_student -= ls[t];
            self.targets += 1;
            self.window.0 -= lt[t];
            self.window.1 -= ls[t];
            self.window.2 += 1;
        }
        self.positions += 1;
        Ok(())
    }

    /// Close a window: its ln PPL for each model joins the correlation.
    pub fn end_window(&mut self) {
        let (t, s, n) = std::mem::take(&mut self.window);
        if n > 0 {
            self.window_ln_ppl.push((t / n as f64, s / n as f64));
        }
    }

    /// Mean KL(teacher || student) per position, nats.
    pub fn mean_kl(&self) -> f64 {
        self.kl_sum / self.positions as f64
    }

    /// Fraction of positions with the same top-1 next token.
    pub fn top1_agreement(&self) -> f64 {
        self.agree as f64 / self.positions as f64
    }

    /// The llama.cpp-style summary; `None` before any position.
    pub fn stats(&self) -> Option<KlSummary> {
        if self.positions == 0 {
            return None;
        }
        let (kl_mean, kl_stderr) = crate::numeric::mean_and_stderr(&self.kls);
        let mut sorted = self.kls.clone();
        sorted.sort_by(f64::total_cmp);
        let p = self.top1_agreement();
        let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
        let (dt_mean, dt_se) = crate::numeric::mean_and_stderr(&self.delta_target);
        let (dtop_mean, _) = crate::numeric::mean_and_stderr(&self.delta_top);
        Some(KlSummary {
            kl_mean,
            kl_stderr,
            kl_percentiles: KL_PERCENTILES
                .iter()
                .map(|(q, label)| (label.to_string(), quantile(&sorted, q / 100.0)))
                .collect(),
            same_top: p,
            same_top_stderr: (p * (1.0 - p) / self.positions as f64).sqrt(),
            delta_p_target_mean: dt_mean,
            delta_p_target_stderr: dt_se,
            delta_p_target_rms: rms(&self.delta_target),
            delta_p_top_mean: dtop_mean,
            delta_p_top_rms: rms(&self.delta_top),
            ln_ppl_correlation: pearson(&self.window_ln_ppl),
            ppl_ratio: (self.targets > 0)
                .then(|| ((self.nll_student - self.nll_teacher) / self.targets as f64).exp()),
            windows: self.window_ln_ppl.len(),
        })
    }
}

/// What [`TokenFidelity::stats`] gives (the figures of llama.cpp's KL-divergence report).
#[derive(Debug, Clone, PartialEq)]
pub struct KlSummary {
    pub kl_mean: f64,
    pub kl_stderr: f64,
    /// (label, KL) for max, 99.9%, 99%, 95%, 90%, median, 10%, 5%, 1%, 0.1%, min.
    pub kl_percentiles: Vec<(String, f64)>,
    pub same_top: f64,
    pub same_top_stderr: f64,
    pub delta_p_target_mean: f64,
    pub delta_p_target_stderr: f64,
    pub delta_p_target_rms: f64,
    pub delta_p_top_mean: f64,
    pub delta_p_top_rms: f64,
    pub ln_ppl_correlation: Option<f64>,
    pub ppl_ratio: Option<f64>,
    pub windows: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_and_agreement_by_hand() {
        let mut f = TokenFidelity::default();
        // Identical: KL 0, agree.
        f.add(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).unwrap();
        // p = softmax(0, ln 3) = [1/4, 3/4]; q = softmax(ln 3, 0) = [3/4, 1/4]:
        // KL = 1/4 ln(1/3) + 3/4 ln 3 = ln 3 / 2; top-1 differs.
        f.add(&[0.0, 3f32.ln()], &[3f32.ln(), 0.0]).unwrap();
        assert_eq!(f.positions, 2);
        assert!(
            (f.mean_kl() - 3f64.ln() / 4.0).abs() < 1e-6,
            "{}",
            f.mean_kl()
        );
        assert_eq!(f.top1_agreement(), 0.5);
    }

    #[test]
    fn llama_cpp_statistics_by_hand() {
        let mut f = TokenFidelity::default();
        // Position 1: p = q = [1/4, 3/4]; next token 1. Position 2: p = [1/4, 3/4],
        // q = [3/4, 1/4]; next token 0. One window.
        let (a, b) = ([0.0f32, 3f32.ln()], [3f32.ln(), 0.0f32]);
        f.add_position(&a, &a, Some(1)).unwrap();
        f.add_position(&a, &b, Some(0)).unwrap();
        f.end_window();
        // Window 2: the same two positions the other way round.
        f.add_position(&a, &b, Some(0)).unwrap();
        f.add_position(&a, &a, Some(1)).unwrap();
        f.end_window();
        let s = f.stats().unwrap();
        let kl = 3f64.ln() / 2.0;
        assert!((s.kl_mean - kl / 2.0).abs() < 1e-6);
        // KLs [0, kl, kl, 0]: sample sd = kl / sqrt(3), over sqrt(4).
        assert!((s.kl_stderr - kl / 3f64.sqrt() / 2.0).abs() < 1e-6);
        let pct: std::collections::BTreeMap<_, _> = s.kl_percentiles.iter().cloned().collect();
        assert!((pct["max"] - kl).abs() < 1e-6 && pct["min"].abs() < 1e-6);
        assert!((pct["median"] - kl / 2.0).abs() < 1e-6);
        assert_eq!(s.same_top, 0.5);
        assert!((s.same_top_stderr - 0.25).abs() < 1e-12);
        // Δp of the next token: 0, then q(0) - p(0) = 3/4 - 1/4 = +1/2, twice each.
        assert!((s.delta_p_target_mean - 0.25).abs() < 1e-6);
        assert!((s.delta_p_target_rms - (0.125f64).sqrt()).abs() < 1e-6);
        // Δp of the teacher's top token (1): 0, then 1/4 - 3/4 = -1/2.
        assert!((s.delta_p_top_mean + 0.25).abs() < 1e-6);
        // PPL ratio: student NLL 4 ln(4/3), teacher 2 ln(4/3) + 2 ln 4, over 4 tokens:
        // exp((2 ln(4/3) - 2 ln 4) / 4) = exp(-ln(3) / 2).
        assert!((s.ppl_ratio.unwrap() - 3f64.powf(-0.5)).abs() < 1e-6);
        assert_eq!(s.windows, 2);
        // Both windows have the same ln PPL for each model: no spread, no correlation.
        assert_eq!(s.ln_ppl_correlation, None);
        assert!((pearson(&[(1.0, 2.0), (2.0, 4.0), (3.0, 7.0)]).unwrap() - 0.9934).abs() < 1e-4);
        assert_eq!(quantile(&[0.0, 10.0], 0.25), 2.5);
    }

    #[test]
    fn different_vocabularies_are_refused() {
        let err = TokenFidelity::default()
            .add(&[0.0, 1.0], &[0.0])
            .unwrap_err();
        assert!(err.contains("shared tokenizer"), "{err}");
    }
}
