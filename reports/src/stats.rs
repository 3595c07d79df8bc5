//! Paired statistics of teacher versus student on the same examples: a paired bootstrap
//! confidence interval of the metric difference, McNemar's exact test on the discordant pairs,
//! calibration (ECE and Brier score) and fidelity (agreement, KL divergence).
//!
//! All resampling is seeded (SplitMix64), so a report is reproducible to the digit.

/// SplitMix64: small, fast, well-mixed; the workspace's one pseudo-random generator (the
/// bootstrap here, the probe's row sample, synthetic inputs and test data).
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// A uniform value in [-1, 1) with 24 random bits (test data, synthetic weights).
    pub fn next_signed_unit_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform index in `0..n` (n > 0), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }
}

/// A two-sided confidence interval with its point estimate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    pub level: f64,
    pub resamples: usize,
}

/// Paired bootstrap: resample example indices with replacement (the same indices for both
/// models), recompute `metric(student) - metric(teacher)` on each resample, and take the
/// percentile interval. `metric(indices)` returns (teacher, student) on those examples.
pub fn paired_bootstrap<F>(n: usize, resamples: usize, level: f64, seed: u64, metric: F) -> Interval
where
    F: Fn(&[usize]) -> (f64, f64),
{
    paired_bootstrap_each(n, resamples, level, seed, metric).diff
}

/// The intervals of one paired bootstrap: of the difference, and of each model's own metric
/// (from the same resamples, so each model's interval is drawn from the data the difference's
/// is).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedIntervals {
    pub diff: Interval,
    pub teacher: Interval,
    pub student: Interval,
}

/// [`paired_bootstrap`] that also returns each model's percentile interval.
pub fn paired_bootstrap_each<F>(
    n: usize,
    resamples: usize,
    level: f64,
    seed: u64,
    metric: F,
) -> PairedIntervals
where
    F: Fn(&[usize]) -> (f64, f64),
{
    let all: Vec<usize> = (0..n).collect();
    let (t, s) = metric(&all);
    let mut rng = SplitMix64(seed);
    let (mut diffs, mut ts, mut ss) = (
        Vec::with_capacity(resamples),
        Vec::with_capacity(resamples),
        Vec::with_capacity(resamples),
    );
    let mut idx = vec![0usize; n];
    for _ in 0..resamples {
        for slot in idx.iter_mut() {
            *slot = rng.below(n);
        }
        let (a, b) = metric(&idx);
        if a.is_finite() && b.is_finite() {
            diffs.push(b - a);
            ts.push(a);
            ss.push(b);
        }
    }
    let alpha = (1.0 - level) / 2.0;
    let interval = |mut v: Vec<f64>, estimate: f64| {
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if v.is_empty() {
                f64::NAN
            } else {
                let rank = q * (v.len() - 1) as f64;
                let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
                v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
            }
        };
        Interval {
            estimate,
            low: pick(alpha),
            high: pick(1.0 - alpha),
            level,
            resamples,
        }
    };
    PairedIntervals {
        diff: interval(diffs, s - t),
        teacher: interval(ts, t),
        student: interval(ss, s),
    }
}

/// McNemar's exact test: `b` examples only the teacher got right, `c` only the student.
/// Two-sided p-value from the binomial distribution with p = 1/2 over the b + c discordant pairs.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // P(X <= k) for X ~ Binomial(n, 1/2), summed in log space for large n.
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// Expected calibration error with `bins` equal-width confidence bins: the example-weighted
/// mean of |accuracy - mean confidence| per bin. `confidence` is the predicted label's
/// probability, `correct` whether that label was right.
pub fn expected_calibration_error(confidence: &[f64], correct: &[bool], bins: usize) -> f64 {
    assert_eq!(confidence.len(), correct.len());
    let n = confidence.len();
    if n == 0 {
        return 0.0;
    }
    let mut count = vec![0usize; bins];
    let mut conf_sum = vec![0.0; bins];
    let mut right = vec![0usize; bins];
    for (&p, &ok) in confidence.iter().zip(correct) {
        // Bins are (lo, hi]; a confidence of exactly 0 goes to the first bin.
        let b = ((p * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        count[b] += 1;
        conf_sum[b] += p;
        right[b] += ok as usize;
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let c = count[b] as f64;
            (c / n as f64) * (right[b] as f64 / c - conf_sum[b] / c).abs()
        })
        .sum()
}

/// Multi-class Brier score: mean over examples of the squared distance between the probability
/// vector and the one-hot gold label.
pub fn brier_score(probs: &[Vec<f64>], gold: &[usize]) -> f64 {
    assert_eq!(probs.len(), gold.len());
    if probs.is_empty() {
        return 0.0;
    }
    probs
        .iter()
        .zip(gold)
        .map(|(p, &g)| {
            p.iter()
                .enumerate()
                .map(|(k, &v)| (v - if k == g { 1.0 } else { 0.0 }).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / probs.len() as f64
}

/// KL(p || q) in nats, with q floored at 1e-12 so a zero the student assigns costs a large but
/// finite amount.
pub fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(a, _)| **a > 0.0)
        .map(|(a, b)| a * (a / b.max(1e-12)).ln())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_on_small_tables() {
        // b = 1, c = 9: 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11/1024
        assert!((mcnemar_exact(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
        assert!((mcnemar_exact(9, 1) - 22.0 / 1024.0).abs() < 1e-12);
        // b = c: p = 1 (capped).
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // b = 0, c = 6: 2 / 64
        assert!((mcnemar_exact(0, 6) - 2.0 / 64.0).abs() < 1e-12);
        // Large n stays finite and small.
        let p = mcnemar_exact(400, 600);
        assert!(p > 0.0 && p < 1e-9, "{p}");
    }

    #[test]
    fn ece_and_brier_by_hand() {
        // Two bins of interest with 15 bins: 0.95 (bin 15) twice, one right; 0.6 (bin 9) twice, both right.
        let conf = [0.95, 0.95, 0.6, 0.6];
        let ok = [true, false, true, true];
        // bin 15: |0.5 - 0.95| = 0.45, weight 0.5; bin 9: |1 - 0.6| = 0.4, weight 0.5
        assert!((expected_calibration_error(&conf, &ok, 15) - 0.425).abs() < 1e-12);
        // Brier: [0.9, 0.1] gold 0 -> 0.01 + 0.01 = 0.02; [0.3, 0.7] gold 0 -> 0.49 + 0.49 = 0.98
        let probs = vec![vec![0.9, 0.1], vec![0.3, 0.7]];
        assert!((brier_score(&probs, &[0, 0]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn kl_by_hand() {
        // KL([0.5, 0.5] || [0.25, 0.75]) = 0.5 ln 2 + 0.5 ln(2/3)
        let kl = kl_divergence(&[0.5, 0.5], &[0.25, 0.75]);
        assert!((kl - (0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln())).abs() < 1e-12);
        assert_eq!(kl_divergence(&[0.2, 0.8], &[0.2, 0.8]), 0.0);
        assert!(kl_divergence(&[1.0, 0.0], &[0.0, 1.0]) > 20.0);
    }

    #[test]
    fn bootstrap_interval_covers_the_true_difference() {
        // Synthetic: teacher right with probability 0.8, student 0.7, independent per example.
        // Over 40 independent data sets, the 95% interval should contain the true -0.1 in most.
        let mut covered = 0;
        let trials = 40;
        for t in 0..trials {
            let mut rng = SplitMix64(1000 + t);
            let n = 400;
            let teacher: Vec<f64> = (0..n)
                .map(|_| (rng.next_u64() % 1000 < 800) as u8 as f64)
                .collect();
            let student: Vec<f64> = (0..n)
                .map(|_| (rng.next_u64() % 1000 < 700) as u8 as f64)
                .collect();
            let ci = paired_bootstrap(n, 1000, 0.95, 7, |idx| {
                let m = |v: &Vec<f64>| idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64;
                (m(&teacher), m(&student))
            });
            assert!(ci.low <= ci.estimate && ci.estimate <= ci.high);
            if ci.low <= -0.1 && -0.1 <= ci.high {
                covered += 1;
            }
        }
        // Nominal 95%: expect about 38 of 40; allow sampling noise.
        assert!(covered >= 34, "covered {covered} of {trials}");
    }

    #[test]
    fn bootstrap_is_reproducible() {
        let v: Vec<f64> = (0..50).map(|i| (i % 3) as f64).collect();
        let f = |idx: &[usize]| {
            (
                0.0,
                idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64,
            )
        };
        assert_eq!(
            paired_bootstrap(50, 200, 0.95, 3, f),
            paired_bootstrap(50, 200, 0.95, 3, f)
        );
    }
}
