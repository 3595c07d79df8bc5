//! What a task asks of a model and what the model answers: the request kinds every backend
//! implements a subset of, after lm-evaluation-harness's request types (`loglikelihood`,
//! `loglikelihood_rolling`, `generate_until`) plus the two that encoders answer.
//!
//! A task builds [`Request`]s from its data and scores the [`Response`]s; it never sees a
//! model. A backend answers the kinds it supports and refuses the others with
//! [`unsupported`], an error that names the task and the model.

use crate::generation::perplexity::{NllSum, WindowSettings};

/// One example's text(s).
#[derive(Debug, Clone, Copy)]
pub struct TextInput<'a> {
    pub a: &'a str,
    pub b: Option<&'a str>,
}

/// Per-input output rows, in input order, and how many inputs were truncated.
#[derive(Debug, Clone, Default)]
pub struct Batched {
    pub rows: Vec<Vec<f32>>,
    pub n_truncated: usize,
    /// Tokens each input became (after truncation), in input order.
    pub token_counts: Vec<usize>,
    /// Seconds spent in the model forward (tensor building to outputs on the host), excluding
    /// tokenisation.
    pub forward_s: f64,
}

/// The kinds of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Head logits for each text or pair.
    Classify,
    /// A pooled sentence embedding for each text.
    Embed,
    /// The summed log-probability of a continuation after a context, and whether greedy
    /// decoding would have produced it.
    LogLikelihood,
    /// The log-likelihood of a whole text in sliding windows (perplexity).
    LogLikelihoodRolling,
    /// A greedy continuation of a prompt.
    Generate,
}

impl RequestKind {
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Classify => "classify",
            RequestKind::Embed => "embed",
            RequestKind::LogLikelihood => "loglikelihood",
            RequestKind::LogLikelihoodRolling => "loglikelihood_rolling",
            RequestKind::Generate => "generate",
        }
    }
}

/// A context and the continuation whose log-probability is asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContextContinuation {
    pub context: String,
    pub continuation: String,
}

/// A batch of requests of one kind.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    Classify {
        inputs: &'a [TextInput<'a>],
        batch_size: usize,
    },
    Embed {
        inputs: &'a [TextInput<'a>],
        batch_size: usize,
    },
    LogLikelihood {
        pairs: &'a [ContextContinuation],
        /// Continuations of one shared context run together, at most this many at a time.
        /// Scores do not depend on it beyond float rounding.
        batch_size: usize,
    },
    LogLikelihoodRolling {
        text: &'a str,
        window: WindowSettings,
    },
    Generate {
        prompts: &'a [String],
        max_new_tokens: usize,
    },
}

impl Request<'_> {
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Classify { .. } => RequestKind::Classify,
            Request::Embed { .. } => RequestKind::Embed,
            Request::LogLikelihood { .. } => RequestKind::LogLikelihood,
            Request::LogLikelihoodRolling { .. } => RequestKind::LogLikelihoodRolling,
            Request::Generate { .. } => RequestKind::Generate,
        }
    }
}

/// The answer to one [`ContextContinuation`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogLikelihood {
    /// Sum over the continuation's tokens of log p(token | everything before it), in nats.
    pub logprob: f64,
    /// Whether every continuation token is the model's most likely next token.
    pub is_greedy: bool,
    /// Tokens the continuation became.
    pub tokens: usize,
}

/// The answer to a rolling log-likelihood request.
#[derive(Debug, Clone)]
pub struct RollingLogLikelihood {
    pub nll: NllSum,
    /// Tokens run through the model, window by window (windows overlap).
    pub tokens_run: usize,
    /// Wall time of each window's forward pass, in milliseconds.
    pub window_ms: Vec<f64>,
}

/// One greedy continuation, timed.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub stopped_at_eos: bool,
    /// Tokens of the prompt as the model saw it.
    pub prompt_tokens: usize,
    /// Tokenising the prompt, the prompt's forward pass and picking the first new token.
    pub ttft_s: f64,
    /// Every later token, one cached forward each.
    pub decode_s: f64,
}

/// What a backend answers, one variant per request kind (Classify and Embed share rows).
#[derive(Debug, Clone)]
pub enum Response {
    Rows(Batched),
    LogLikelihoods(Vec<LogLikelihood>),
    Rolling(RollingLogLikelihood),
    Generations(Vec<Generation>),
}

impl Response {
    /// The rows of a Classify or Embed answer.
    pub fn into_rows(self) -> Result<Batched, String> {
        match self {
            Response::Rows(b) => Ok(b),
            other => Err(format!("expected rows, got {}", other.what())),
        }
    }
    pub fn into_loglikelihoods(self) -> Result<Vec<LogLikelihood>, String> {
        match self {
            Response::LogLikelihoods(v) => Ok(v),
            other => Err(format!("expected log-likelihoods, got {}", other.what())),
        }
    }
    pub fn into_rolling(self) -> Result<RollingLogLikelihood, String> {
        match self {
            Response::Rolling(r) => Ok(r),
            other => Err(format!(
                "expected a rolling log-likelihood, got {}",
                other.what()
            )),
        }
    }
    pub fn into_generations(self) -> Result<Vec<Generation>, String> {
        match self {
            Response::Generations(g) => Ok(g),
            other => Err(format!("expected generations, got {}", other.what())),
        }
    }
    fn what(&self) -> &'static str {
        match self {
            Response::Rows(_) => "rows",
            Response::LogLikelihoods(_) => "log-likelihoods",
            Response::Rolling(_) => "a rolling log-likelihood",
            Response::Generations(_) => "generations",
        }
    }
}

/// The error a backend gives for a kind it does not answer.
pub fn unsupported(kind: RequestKind, task: &str, model: &str, answers: &[RequestKind]) -> String {
    let names: Vec<&str> = answers.iter().map(|k| k.name()).collect();
    format!(
        "task {task} needs {} requests, which model {model} does not answer (it answers: {})",
        kind.name(),
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_task_model_and_what_the_model_does_answer() {
        let e = unsupported(
            RequestKind::LogLikelihood,
            "arc_easy",
            "bert-base",
            &[RequestKind::Classify, RequestKind::Embed],
        );
        assert_eq!(
            e,
            "task arc_easy needs loglikelihood requests, which model bert-base does not answer \
             (it answers: classify, embed)"
        );
    }

    #[test]
    fn a_response_of_the_wrong_kind_is_an_error_not_a_guess() {
        let r = Response::Generations(Vec::new());
        assert_eq!(
            r.clone().into_rows().unwrap_err(),
            "expected rows, got generations"
        );
        assert!(r.into_generations().unwrap().is_empty());
    }
}
