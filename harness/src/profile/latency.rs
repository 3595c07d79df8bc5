//! Latency statistics: percentiles by linear interpolation between closest ranks (NumPy's
//! default `linear` method), mean and sample standard deviation.

use reports::LatencySummary;

/// The `q`-th percentile (0-100) of `sorted` (ascending), interpolating linearly between the
/// two closest ranks: rank = q/100 * (n - 1).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of an empty set");
    let rank = (q / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// Latencies as `results.json` keeps them: in the order run, rounded to the microsecond
/// (finer digits are timer noise, and they would triple the file's size).
pub fn samples(latencies_ms: &[f64]) -> Vec<f64> {
    latencies_ms
        .iter()
        .map(|v| (v * 1000.0).round() / 1000.0)
        .collect()
}

/// Summarise latencies given in milliseconds. `None` for an empty set.
pub fn summarise(latencies_ms: &[f64]) -> Option<LatencySummary> {
    if latencies_ms.is_empty() {
        return None;
    }
    let mut sorted = latencies_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let mean = sorted.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    Some(LatencySummary {
        p50: percentile(&sorted, 50.0),
        p90: percentile(&sorted, 90.0),
        p95: Some(percentile(&sorted, 95.0)),
        p99: percentile(&sorted, 99.0),
        mean,
        stddev: var.sqrt(),
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], [50, 90, 99]) = [2.5, 3.7, 3.97]
        let s = [1.0, 2.0, 3.0, 4.0];
        assert!((percentile(&s, 50.0) - 2.5).abs() < 1e-12);
        assert!((percentile(&s, 90.0) - 3.7).abs() < 1e-12);
        assert!((percentile(&s, 99.0) - 3.97).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&s, 0.0), 1.0);
        assert_eq!(percentile(&s, 100.0), 4.0);
    }

    #[test]
    fn summary_by_hand() {
        // Unsorted input; mean 5, sample variance ((9+1+1+9)/3) = 20/3.
        let s = summarise(&[8.0, 2.0, 6.0, 4.0]).unwrap();
        assert_eq!(s.n, 4);
        assert!((s.mean - 5.0).abs() < 1e-12);
        assert!((s.stddev - (20.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((s.p50 - 5.0).abs() < 1e-12);
        assert!(summarise(&[]).is_none());
    }
}
