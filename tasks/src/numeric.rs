//! The few numerical helpers every part of the harness shares, written once: a stable
//! log-sum-exp, log-softmax at a target, softmax and argmax (first maximum wins), and the mean
//! with its standard error.

/// log(sum(exp(logits))), computed stably in f64: the normaliser of a log-softmax.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max
}

/// log softmax of one row of logits, at index `target`.
pub fn log_prob(logits: &[f32], target: u32) -> f64 {
    logits[target as usize] as f64 - log_sum_exp(logits)
}

/// Softmax of a row of logits (f32) or log-likelihoods (f64), in f64.
pub fn softmax<T: Copy + Into<f64>>(row: &[T]) -> Vec<f64> {
    let max = row
        .iter()
        .map(|&v| v.into())
        .fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = row.iter().map(|&v| (v.into() - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Index of the largest value, the first one on ties (`numpy.argmax`); 0 when none is above
/// -inf (NaN never wins).
pub fn argmax(values: impl IntoIterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.into_iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// [`argmax`] of f32 values (logits).
pub fn argmax_f32(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

/// Mean and its standard error (sample standard deviation with n - 1, over sqrt(n)): lm-eval's
/// for accuracies, llama.cpp's for KL and Δp. NaN for what n does not allow (no values; one
/// value has no standard error).
pub fn mean_and_stderr(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prob_is_log_softmax() {
        let row = [1.0f32, 2.0, 3.0];
        let z: f64 = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        assert!((log_prob(&row, 2) - (3f64.exp() / z).ln()).abs() < 1e-12);
        assert!((log_prob(&row, 0) - (1f64.exp() / z).ln()).abs() < 1e-12);
        let p = softmax(&row);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!((p[2] - 3f64.exp() / z).abs() < 1e-15);
    }

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nan() {
        assert_eq!(argmax([0.1, 0.7, 0.7, 0.2]), 1);
        assert_eq!(argmax_f32(&[f32::NAN, -1.0, -0.5]), 2);
        assert_eq!(argmax([]), 0);
    }
}
