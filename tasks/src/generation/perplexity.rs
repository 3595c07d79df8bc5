//! Perplexity with the sliding-window method of the Hugging Face perplexity guide
//! (<https://huggingface.co/docs/transformers/perplexity>): windows of `context` tokens move by
//! `stride`; each window scores only the tokens the previous windows did not, each conditioned on
//! up to `context - 1` tokens before it inside the window. With `stride == context` the windows
//! are disjoint (fast, less context); a smaller stride gives every scored token more context.
//!
//! A window's first token has no context inside the window and is never scored, exactly as in
//! the guide (its `num_loss_tokens = num_valid_tokens - batch_size`): with overlapping windows
//! (`stride < context`) that loses only the text's first token, so `n - 1` tokens are scored;
//! with disjoint windows (`stride == context`) one token per window is lost.

/// Window settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSettings {
    /// Tokens per model call (the model's context length at most).
    pub context: usize,
    /// How far each window moves; `1..=context`.
    pub stride: usize,
}

/// Summed negative log-likelihood and what it was summed over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NllSum {
    /// Natural-log negative log-likelihood, summed over scored tokens.
    pub nll: f64,
    pub tokens_scored: usize,
    pub windows: usize,
}

impl NllSum {
    /// exp(mean NLL per scored token).
    pub fn token_perplexity(&self) -> f64 {
        (self.nll / self.tokens_scored as f64).exp()
    }
    /// exp(NLL per word): comparable across tokenizers (lm-evaluation-harness's `word_perplexity`).
    pub fn word_perplexity(&self, words: usize) -> f64 {
        (self.nll / words as f64).exp()
    }
    /// NLL in bits per UTF-8 byte of the text: comparable across tokenizers.
    pub fn bits_per_byte(&self, bytes: usize) -> f64 {
        self.nll / (bytes as f64 * std::f64::consts::LN_2)
    }
}

/// Run the sliding windows over `ids`. `logits(window)` returns one row of logits per position
/// of the window: row `j` predicts the token at `j + 1`.
pub fn sliding_window_nll<F>(
    ids: &[u32],
    w: WindowSettings,
    mut logits: F,
) -> Result<NllSum, String>
where
    F: FnMut(&[u32]) -> Result<Vec<Vec<f32>>, String>,
{
    if w.context < 2 {
        return Err(format!(
            "context must be at least 2 tokens, got {}",
            w.context
        ));
    }
    if w.stride == 0 || w.stride > w.context {
        return Err(format!(
            "stride must be between 1 and the context ({}), got {}",
            w.context, w.stride
        ));
    }
    if ids.len() < 2 {
        return Err(format!(
            "need at least 2 tokens to score, got {}",
            ids.len()
        ));
    }
    let mut total = NllSum {
        nll: 0.0,
        tokens_scored: 0,
        windows: 0,
    };
    let mut prev_end = 0;
    let mut begin = 0;
    loop {
        let end = (begin + w.context).min(ids.len());
        let window = &ids[begin..end];
        let rows = logits(window)?;
        if rows.len() != window.len() {
            return Err(format!(
                "model returned {} rows for a window of {} tokens",
                rows.len(),
                window.len()
            ));
        }
        // Score the tokens at positions prev_end..end (absolute), skipping the window's first
        // token, which has no context inside the window.
        let first = prev_end.max(begin + 1);
        for pos in first..end {
            let row = &rows[pos - begin - 1];
            let target = ids[pos];
            if target as usize >= row.len() {
                return Err(format!(
                    "token id {target} is outside the model's {} logits",
                    row.len()
                ));
            }
            total.nll -= crate::numeric::log_prob(row, target);
            total.tokens_scored += 1;
        }
        total.windows += 1;
        prev_end = end;
        if end == ids.len() {
            break;
        }
        begin += w.stride;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model that gives every next token the same probability: perplexity equals the vocab.
    fn uniform(vocab: usize) -> impl FnMut(&[u32]) -> Result<Vec<Vec<f32>>, String> {
        move |w: &[u32]| Ok(vec![vec![0.0; vocab]; w.len()])
    }

    #[test]
    fn uniform_model_has_perplexity_equal_to_vocab() {
        let ids: Vec<u32> = (0..50).map(|i| i % 7).collect();
        let r = sliding_window_nll(
            &ids,
            WindowSettings {
                context: 8,
                stride: 4,
            },
            uniform(7),
        )
        .unwrap();
        assert_eq!(r.tokens_scored, 49);
        assert!((r.token_perplexity() - 7.0).abs() < 1e-9);
        // 49 tokens of ln 7 nats, over 10 words or 100 bytes.
        assert!((r.word_perplexity(10) - (49.0 * 7f64.ln() / 10.0).exp()).abs() < 1e-6);
        assert!((r.bits_per_byte(100) - 49.0 * 7f64.log2() / 100.0).abs() < 1e-12);
    }

    #[test]
    fn each_token_is_scored_at_most_once_and_windows_cover_the_text() {
        for (n, context, stride) in [(20, 8, 8), (20, 8, 3), (20, 8, 1), (5, 8, 4), (17, 4, 2)] {
            let ids: Vec<u32> = (0..n as u32).collect();
            let mut contexts = Vec::new();
            // Remember, for each scored token, how many tokens of context it had.
            let r = sliding_window_nll(&ids, WindowSettings { context, stride }, |w| {
                contexts.push((w[0], w.len()));
                Ok(vec![vec![0.0; n]; w.len()])
            })
            .unwrap();
            let expected = if stride < context {
                n - 1
            } else {
                n - r.windows
            };
            assert_eq!(
                r.tokens_scored, expected,
                "n={n} context={context} stride={stride}"
            );
            let last = contexts.last().unwrap();
            assert_eq!(
                last.0 as usize + last.1,
                n,
                "the last window reaches the end"
            );
            assert!(contexts
                .windows(2)
                .all(|p| p[1].0 as usize - p[0].0 as usize == stride));
        }
    }

    #[test]
    fn a_model_that_knows_the_next_token_scores_it() {
        // Logit 10 on the true next token among 4: p = e^10 / (e^10 + 3).
        let ids = vec![0u32, 1, 2, 3, 0, 1, 2, 3];
        let r = sliding_window_nll(
            &ids,
            WindowSettings {
                context: 4,
                stride: 2,
            },
            |w| {
                Ok(w.iter()
                    .map(|&t| {
                        let mut row = vec![0.0f32; 4];
                        row[((t + 1) % 4) as usize] = 10.0;
                        row
                    })
                    .collect())
            },
        )
        .unwrap();
        let p = 10f64.exp() / (10f64.exp() + 3.0);
        assert!(
            (r.token_perplexity() - 1.0 / p).abs() < 1e-9,
            "{}",
            r.token_perplexity()
        );
    }

    #[test]
    fn bad_settings_are_errors() {
        let ids = vec![1u32, 2, 3];
        assert!(sliding_window_nll(
            &ids,
            WindowSettings {
                context: 4,
                stride: 5
            },
            uniform(4)
        )
        .unwrap_err()
        .contains("stride"));
        assert!(sliding_window_nll(
            &ids,
            WindowSettings {
                context: 1,
                stride: 1
            },
            uniform(4)
        )
        .unwrap_err()
        .contains("context"));
        assert!(sliding_window_nll(
            &[1],
            WindowSettings {
                context: 4,
                stride: 4
            },
            uniform(4)
        )
        .unwrap_err()
        .contains("at least 2"));
        assert!(sliding_window_nll(
            &ids,
            WindowSettings {
                context: 4,
                stride: 4
            },
            uniform(2)
        )
        .unwrap_err()
        .contains("outside"));
    }
}
