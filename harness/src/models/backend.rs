//! The one trait the run loop asks of a model. A backend answers the request kinds of
//! [`tasks::request`] it supports (encoders: classify and embed; decoders: log-likelihoods
//! and generation; the mock: all of them) and refuses the others with an error naming the
//! task and the model.
//!
//! Causal LMs also expose their tokenizer and per-position logits ([`Backend::tokenize`],
//! [`Backend::window_logits`]): token-level fidelity between teacher and student needs both
//! models' full next-token distributions at the same positions, which no task-level request
//! carries. [`rolling_loglikelihood`] and [`loglikelihoods`] build the two log-likelihood
//! kinds on those two, once for every decoder.

use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use reports::CheckpointInfo;
use tasks::generation::perplexity::{sliding_window_nll, WindowSettings};
use tasks::numeric::{argmax_f32, log_prob};
use tasks::request::{
    Batched, ContextContinuation, LogLikelihood, Request, RequestKind, Response,
    RollingLogLikelihood, TextInput,
};

use crate::profile::flops::EncoderDims;

/// A loaded model.
pub trait Backend {
    fn info(&self) -> &CheckpointInfo;
    /// The request kinds this backend answers.
    fn answers(&self) -> &'static [RequestKind];
    /// Answer one batch of requests of one kind for `task` (named in errors).
    fn run(&self, task: &str, request: Request) -> Result<Response>;
    /// Label names of the classification head (one entry for a regression head), if any.
    fn head_labels(&self) -> Option<&[String]> {
        None
    }
    /// Layer sizes for analytic FLOPs of an encoder, when known.
    fn dims(&self) -> Option<EncoderDims> {
        None
    }
    /// A causal LM's token ids of a text (special tokens as its tokenizer adds them), with
    /// the byte offset where each token ends.
    fn tokenize(&self, _text: &str) -> Result<(Vec<u32>, Vec<usize>)> {
        bail!("{} is not a causal language model", self.info().id)
    }
    /// A causal LM's next-token logits at every position of one window: row `j` predicts
    /// the token at `j + 1`.
    fn window_logits(&self, _ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        bail!("{} is not a causal language model", self.info().id)
    }
    /// Longest sequence the model takes, when it has a hard limit.
    fn max_positions(&self) -> Option<usize> {
        None
    }
    /// Identifies a causal LM's vocabulary: two models with the same value tokenize alike.
    fn vocabulary_id(&self) -> Option<u64> {
        None
    }
    /// Approximate forward FLOPs per token of a causal LM (2 x the parameters that multiply).
    fn flops_per_token(&self) -> f64 {
        0.0
    }
    /// Log-likelihoods of several continuations after one shared context (token ids), with
    /// the context run once: `None` when the backend has no faster way than one window per
    /// continuation ([`loglikelihood_of_ids`]), which the caller then takes.
    fn shared_context_loglikelihoods(
        &self,
        _context: &[u32],
        _continuations: &[Vec<u32>],
        _batch_size: usize,
    ) -> Result<Option<Vec<LogLikelihood>>> {
        Ok(None)
    }
}

impl dyn Backend + '_ {
    /// Head logits for each input (a Classify request).
    pub fn classify(&self, task: &str, inputs: &[TextInput], batch_size: usize) -> Result<Batched> {
        self.run(task, Request::Classify { inputs, batch_size })?
            .into_rows()
            .map_err(|e| anyhow!("{}: {e}", self.info().id))
    }

    /// Pooled embeddings for each input (an Embed request).
    pub fn embed(&self, task: &str, inputs: &[TextInput], batch_size: usize) -> Result<Batched> {
        self.run(task, Request::Embed { inputs, batch_size })?
            .into_rows()
            .map_err(|e| anyhow!("{}: {e}", self.info().id))
    }
}

/// A whole text's log-likelihood in sliding windows (the Hugging Face perplexity guide's
/// protocol), timing each window.
pub fn rolling_loglikelihood(
    model: &dyn Backend,
    text: &str,
    window: WindowSettings,
) -> Result<RollingLogLikelihood> {
    let (ids, _) = model.tokenize(text)?;
    let (mut tokens_run, mut window_ms) = (0usize, Vec::new());
    let nll = sliding_window_nll(&ids, window, |w| {
        let t0 = Instant::now();
        let rows = model.window_logits(w).map_err(|e| format!("{e:#}"))?;
        window_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        tokens_run += w.len();
        Ok(rows)
    })
    .map_err(anyhow::Error::msg)?;
    Ok(RollingLogLikelihood {
        nll,
        tokens_run,
        window_ms,
    })
}

/// lm-evaluation-harness's `loglikelihood` on token ids: the summed log-probability of
/// `continuation` after `context` (at least one token), and whether each continuation token
/// is the most likely one. Context beyond `max_positions` is cut from the left.
pub fn loglikelihood_of_ids(
    model: &dyn Backend,
    context: &[u32],
    continuation: &[u32],
) -> Result<LogLikelihood> {
    if context.is_empty() || continuation.is_empty() {
        bail!("a log-likelihood request needs a context and a continuation of at least one token each");
    }
    let mut whole: Vec<u32> = context.iter().chain(continuation).copied().collect();
    // The last token is only ever a target.
    whole.pop();
    if let Some(max) = model.max_positions() {
        if continuation.len() > max {
            bail!(
                "{}: a continuation of {} tokens exceeds the model's {max} positions",
                model.info().id,
                continuation.len()
            );
        }
        let cut = whole.len().saturating_sub(max);
        whole.drain(..cut);
    }
    let rows = model.window_logits(&whole)?;
    let first = rows.len() + 1 - continuation.len();
    score_rows(&rows[first - 1..], continuation)
}

/// The log-likelihood of `continuation` from the rows of logits that predict its tokens, one
/// row per token.
pub fn score_rows<R: AsRef<[f32]>>(rows: &[R], continuation: &[u32]) -> Result<LogLikelihood> {
    let (mut logprob, mut is_greedy) = (0.0, true);
    for (row, &target) in rows.iter().zip(continuation) {
        let row = row.as_ref();
        if target as usize >= row.len() {
            bail!(
                "token id {target} is outside the model's {} logits",
                row.len()
            );
        }
        logprob += log_prob(row, target);
        is_greedy &= argmax_f32(row) == target as usize;
    }
    Ok(LogLikelihood {
        logprob,
        is_greedy,
        tokens: continuation.len(),
    })
}

/// [`loglikelihood_of_ids`] on texts, tokenized as lm-evaluation-harness does: trailing
/// whitespace of the context moves to the continuation (its `rstrip`), then the
/// continuation's tokens are those of `tokenize(context + continuation)` past as many tokens
/// as `tokenize(context)` has, scored after the context's own tokens.
///
/// Consecutive pairs with the same context (the choices of one question) share it: the
/// context is tokenized once and, where the backend can
/// ([`Backend::shared_context_loglikelihoods`]), run once with its continuations batched
/// `batch_size` at a time.
pub fn loglikelihoods(
    model: &dyn Backend,
    pairs: &[ContextContinuation],
    batch_size: usize,
) -> Result<Vec<LogLikelihood>> {
    let mut out = Vec::with_capacity(pairs.len());
    let mut start = 0;
    while start < pairs.len() {
        let end = start
            + pairs[start..]
                .iter()
                .take_while(|p| p.context == pairs[start].context)
                .count();
        let group = &pairs[start..end];
        let context = group[0].context.trim_end();
        let moved = &group[0].context[context.len()..];
        let (ctx, _) = model.tokenize(context)?;
        if ctx.is_empty() {
            bail!(
                "{}: the context {:?} has no tokens; a log-likelihood needs one",
                model.info().id,
                group[0].context
            );
        }
        let conts = group
            .iter()
            .map(|p| {
                let (whole, _) = model.tokenize(&format!("{context}{moved}{}", p.continuation))?;
                Ok(whole.get(ctx.len()..).unwrap_or_default().to_vec())
            })
            .collect::<Result<Vec<_>>>()?;
        match model.shared_context_loglikelihoods(&ctx, &conts, batch_size.max(1))? {
            Some(lls) => out.extend(lls),
            None => {
                for c in &conts {
                    out.push(loglikelihood_of_ids(model, &ctx, c)?);
                }
            }
        }
        start = end;
    }
    Ok(out)
}
