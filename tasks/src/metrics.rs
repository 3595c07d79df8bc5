//! The official GLUE metrics, written out so each can be checked against a hand computation.
//!
//! Conventions for degenerate inputs follow scikit-learn where it defines one: Matthews
//! correlation and F1 are 0 when their denominator is 0 (for example constant predictions).
//! Pearson and Spearman of a constant series are undefined (SciPy returns NaN); they are
//! reported as 0 here, meaning "no association measurable", so a constant predictor scores as
//! badly as it should instead of poisoning the macro score with NaN.

/// Fraction of predictions equal to gold.
pub fn accuracy(pred: &[usize], gold: &[usize]) -> f64 {
    assert_eq!(pred.len(), gold.len());
    if pred.is_empty() {
        return 0.0;
    }
    let correct = pred.iter().zip(gold).filter(|(p, g)| p == g).count();
    correct as f64 / pred.len() as f64
}

/// Binary confusion counts with label 1 as the positive class: (tp, fp, fn, tn).
fn confusion(pred: &[usize], gold: &[usize]) -> (f64, f64, f64, f64) {
    assert_eq!(pred.len(), gold.len());
    let (mut tp, mut fp, mut fn_, mut tn) = (0.0, 0.0, 0.0, 0.0);
    for (&p, &g) in pred.iter().zip(gold) {
        match (p == 1, g == 1) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fn_ += 1.0,
            (false, false) => tn += 1.0,
        }
    }
    (tp, fp, fn_, tn)
}

/// F1 of the positive class (label 1), as GLUE scores MRPC and QQP.
pub fn f1_binary(pred: &[usize], gold: &[usize]) -> f64 {
    let (tp, fp, fn_, _) = confusion(pred, gold);
    let denom = 2.0 * tp + fp + fn_;
    if denom == 0.0 {
        0.0
    } else {
        2.0 * tp / denom
    }
}

/// Matthews correlation coefficient for binary labels, as GLUE scores CoLA.
pub fn matthews_corrcoef(pred: &[usize], gold: &[usize]) -> f64 {
    let (tp, fp, fn_, tn) = confusion(pred, gold);
    let denom = ((tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_)).sqrt();
    if denom == 0.0 {
        0.0
    } else {
        (tp * tn - fp * fn_) / denom
    }
}

/// Pearson correlation.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len());
    let n = x.len() as f64;
    if x.len() < 2 {
        return 0.0;
    }
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Ranks starting at 1, ties given the average of the ranks they span (as SciPy's `rankdata`).
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = avg;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman rank correlation with average ranks for ties.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&average_ranks(x), &average_ranks(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn accuracy_by_hand() {
        assert!(close(accuracy(&[1, 0, 1, 1], &[1, 1, 1, 0]), 0.5));
    }

    #[test]
    fn f1_by_hand() {
        // tp=2 (idx 0,2), fp=1 (idx 3), fn=1 (idx 1): F1 = 4 / (4 + 1 + 1)
        assert!(close(f1_binary(&[1, 0, 1, 1], &[1, 1, 1, 0]), 4.0 / 6.0));
        assert!(close(f1_binary(&[0, 0], &[0, 0]), 0.0));
    }

    #[test]
    fn mcc_by_hand() {
        // tp=2, fp=1, fn=1, tn=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
        assert!(close(
            matthews_corrcoef(&[1, 0, 1, 1, 0], &[1, 1, 1, 0, 0]),
            1.0 / 6.0
        ));
        assert!(close(matthews_corrcoef(&[1, 0, 1], &[1, 0, 1]), 1.0));
        assert!(close(matthews_corrcoef(&[1, 0, 1], &[0, 1, 0]), -1.0));
    }

    #[test]
    fn mcc_of_constant_predictions_is_zero() {
        assert_eq!(matthews_corrcoef(&[1, 1, 1, 1], &[1, 0, 1, 0]), 0.0);
        assert_eq!(matthews_corrcoef(&[0, 0, 0], &[1, 0, 1]), 0.0);
    }

    #[test]
    fn pearson_by_hand() {
        // x = 1,2,3; y = 2,4,7: means 2 and 13/3; sxy = 5, sxx = 2, syy = 38/3
        let r = pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 7.0]);
        assert!(close(r, 5.0 / (2.0f64 * 38.0 / 3.0).sqrt()), "{r}");
        assert_eq!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), 0.0);
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 10.0, 30.0]),
            vec![1.5, 3.0, 1.5, 4.0]
        );
    }

    #[test]
    fn spearman_with_ties_by_hand() {
        // x ranks: 1.5,1.5,3,4; y ranks: 1,2,3,4.
        // mean 2.5; dx = -1,-1,.5,1.5; dy = -1.5,-.5,.5,1.5
        // sxy = 1.5+.5+.25+2.25 = 4.5; sxx = 1+1+.25+2.25 = 4.5; syy = 5
        let r = spearman(&[1.0, 1.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]);
        assert!(close(r, 4.5 / (4.5f64 * 5.0).sqrt()), "{r}");
        // Monotone but non-linear: Spearman 1, Pearson below 1.
        let x = [1.0, 2.0, 3.0, 4.0];
        let y = [1.0, 8.0, 27.0, 64.0];
        assert!(close(spearman(&x, &y), 1.0));
        assert!(pearson(&x, &y) < 1.0);
    }
}
