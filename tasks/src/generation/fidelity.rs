//! Token-level fidelity of a student to its teacher when both share a tokenizer: at every
//! position, KL(teacher || student) of the next-token distributions and whether their top-1
//! predictions agree.

/// Running totals over positions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenFidelity {
    pub kl_sum: f64,
    pub agree: usize,
    pub positions: usize,
}

fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let lse = crate::numeric::log_sum_exp(logits);
    logits.iter().map(|&l| l as f64 - lse).collect()
}

impl TokenFidelity {
    /// Add one position's logits (same vocabulary for both models).
    pub fn add(&mut self, teacher: &[f32], student: &[f32]) -> Result<(), String> {
        if teacher.len() != student.len() {
            return Err(format!(
                "teacher and student vocabularies differ ({} vs {}); token-level fidelity needs a shared tokenizer",
                teacher.len(),
                student.len()
            ));
        }
        let (lt, ls) = (log_softmax(teacher), log_softmax(student));
        self.kl_sum += lt
            .iter()
            .zip(&ls)
            .map(|(a, b)| a.exp() * (a - b))
            .sum::<f64>();
        self.agree +=
            usize::from(crate::numeric::argmax_f32(teacher) == crate::numeric::argmax_f32(student));
        self.positions += 1;
        Ok(())
    }

    /// Mean KL(teacher || student) per position, nats.
    pub fn mean_kl(&self) -> f64 {
        self.kl_sum / self.positions as f64
    }

    /// Fraction of positions with the same top-1 next token.
    pub fn top1_agreement(&self) -> f64 {
        self.agree as f64 / self.positions as f64
    }
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
    fn different_vocabularies_are_refused() {
        let err = TokenFidelity::default()
            .add(&[0.0, 1.0], &[0.0])
            .unwrap_err();
        assert!(err.contains("shared tokenizer"), "{err}");
    }
}
