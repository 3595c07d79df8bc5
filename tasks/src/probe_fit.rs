//! Probe mode: a multinomial logistic-regression classifier fitted on frozen sentence
//! embeddings, for checkpoints that have no task head (SentEval's linear-probe protocol).
//!
//! Everything here is deterministic so that a probe result is reproducible to the last digit:
//! - the training rows are a fixed-seed sample ([`sample_rows`], SplitMix64 shuffle);
//! - features are standardised with the training mean and standard deviation;
//! - the fit is full-batch gradient descent with Nesterov momentum, a fixed step and a fixed
//!   number of iterations (no early stopping, no data-dependent schedule);
//! - L2 regularisation (`l2`, default 1e-3) applies to the weights, not the biases.
//!
//! For pair tasks the caller builds SentEval's pair features `[u, v, |u - v|, u * v]`
//! ([`pair_features`]).

/// Settings of the probe fit. The defaults are the documented protocol.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeConfig {
    /// Training rows sampled from the train split.
    pub train_rows: usize,
    pub seed: u64,
    pub l2: f64,
    pub iterations: usize,
    pub learning_rate: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            train_rows: 2000,
            seed: 42,
            l2: 1e-3,
            iterations: 300,
            learning_rate: 0.5,
        }
    }
}

/// A fitted probe.
#[derive(Debug, Clone)]
pub struct LogisticProbe {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    /// Row per class: weights then bias.
    weights: Vec<Vec<f64>>,
}

/// Indices of `wanted` rows out of `total`, chosen by a seeded Fisher-Yates shuffle and returned
/// in ascending order. All rows when `wanted >= total`.
pub fn sample_rows(total: usize, wanted: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..total).collect();
    if wanted >= total {
        return idx;
    }
    // The workspace's one generator (the bootstrap's too).
    let mut rng = reports::stats::SplitMix64(seed);
    for i in (1..total).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx.truncate(wanted);
    idx.sort_unstable();
    idx
}

/// SentEval pair features: `[u, v, |u - v|, u * v]`.
pub fn pair_features(u: &[f32], v: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(u.len() * 4);
    out.extend_from_slice(u);
    out.extend_from_slice(v);
    out.extend(u.iter().zip(v).map(|(a, b)| (a - b).abs()));
    out.extend(u.iter().zip(v).map(|(a, b)| a * b));
    out
}

fn softmax_in_place(z: &mut [f64]) {
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in z.iter_mut() {
        *v /= sum;
    }
}

impl LogisticProbe {
    /// Fit on rows `x` with labels `y` in `0..n_classes`.
    pub fn fit(x: &[Vec<f32>], y: &[usize], n_classes: usize, cfg: &ProbeConfig) -> Self {
        assert_eq!(x.len(), y.len());
        assert!(!x.is_empty(), "probe needs training rows");
        let n = x.len() as f64;
        let d = x[0].len();
        let mut mean = vec![0.0; d];
        for row in x {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += *v as f64 / n;
            }
        }
        let mut var = vec![0.0; d];
        for row in x {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (*v as f64 - m).powi(2) / n;
            }
        }
        let inv_std: Vec<f64> = var
            .iter()
            .map(|v| if *v > 1e-12 { 1.0 / v.sqrt() } else { 0.0 })
            .collect();
        let xs: Vec<Vec<f64>> = x
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&mean)
                    .zip(&inv_std)
                    .map(|((v, m), s)| (*v as f64 - m) * s)
                    .collect()
            })
            .collect();

        let mut probe = LogisticProbe {
            mean,
            inv_std,
            weights: vec![vec![0.0; d + 1]; n_classes],
        };
        let mut velocity = vec![vec![0.0; d + 1]; n_classes];
        let momentum = 0.9;
        let mut grad = vec![vec![0.0; d + 1]; n_classes];
        let mut z = vec![0.0; n_classes];
        for _ in 0..cfg.iterations {
            // Nesterov: evaluate the gradient at the look-ahead point.
            let look: Vec<Vec<f64>> = probe
                .weights
                .iter()
                .zip(&velocity)
                .map(|(w, v)| w.iter().zip(v).map(|(a, b)| a + momentum * b).collect())
                .collect();
            for g in grad.iter_mut() {
                g.iter_mut().for_each(|v| *v = 0.0);
            }
            for (row, &label) in xs.iter().zip(y) {
                for (k, w) in look.iter().enumerate() {
                    z[k] = w[d] + row.iter().zip(&w[..d]).map(|(a, b)| a * b).sum::<f64>();
                }
                softmax_in_place(&mut z);
                for (k, g) in grad.iter_mut().enumerate() {
                    let err = (z[k] - if k == label { 1.0 } else { 0.0 }) / n;
                    for (gi, xi) in g[..d].iter_mut().zip(row) {
                        *gi += err * xi;
                    }
                    g[d] += err;
                }
            }
            for k in 0..n_classes {
                for j in 0..=d {
                    let reg = if j < d { cfg.l2 * look[k][j] } else { 0.0 };
                    velocity[k][j] =
                        momentum * velocity[k][j] - cfg.learning_rate * (grad[k][j] + reg);
                    probe.weights[k][j] += velocity[k][j];
                }
            }
        }
        probe
    }

    /// Class probabilities for one row.
    pub fn predict_proba(&self, row: &[f32]) -> Vec<f64> {
        let d = self.mean.len();
        let xs: Vec<f64> = row
            .iter()
            .zip(&self.mean)
            .zip(&self.inv_std)
            .map(|((v, m), s)| (*v as f64 - m) * s)
            .collect();
        let mut z: Vec<f64> = self
            .weights
            .iter()
            .map(|w| w[d] + xs.iter().zip(&w[..d]).map(|(a, b)| a * b).sum::<f64>())
            .collect();
        softmax_in_place(&mut z);
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_deterministic_sorted_and_distinct() {
        let a = sample_rows(1000, 50, 42);
        assert_eq!(a, sample_rows(1000, 50, 42));
        assert_ne!(a, sample_rows(1000, 50, 43));
        assert_eq!(a.len(), 50);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample_rows(5, 10, 1), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn fits_a_separable_problem() {
        // Class is the sign of feature 0; feature 1 is noise.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..200 {
            let s = if i % 2 == 0 { 1.0 } else { -1.0 };
            x.push(vec![
                s * (1.0 + (i % 7) as f32 / 10.0),
                ((i * 37) % 11) as f32,
            ]);
            y.push(usize::from(s > 0.0));
        }
        let probe = LogisticProbe::fit(&x, &y, 2, &ProbeConfig::default());
        let correct = x
            .iter()
            .zip(&y)
            .filter(|(row, &label)| {
                let p = probe.predict_proba(row);
                (p[1] > p[0]) == (label == 1)
            })
            .count();
        assert_eq!(correct, 200);
        let p = probe.predict_proba(&[2.0, 3.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p[1] > 0.9, "{p:?}");
    }

    #[test]
    fn pair_features_layout() {
        assert_eq!(
            pair_features(&[1.0, 2.0], &[3.0, -1.0]),
            vec![1.0, 2.0, 3.0, -1.0, 2.0, 3.0, 3.0, -2.0]
        );
    }
}
