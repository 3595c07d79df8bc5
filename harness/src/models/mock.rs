//! A backend that needs no weights: deterministic outputs derived from the text, so the run
//! loop, label mapping, caching and result writing can be tested end to end without loading a
//! model. It answers every request kind, as an encoder and as a causal LM.
//!
//! On the command line it is `mock:NAME`, optionally with `:labels=a,b` (a classification head
//! with those labels) and `:sharpness=X` (how peaked its next-token distributions are, so a
//! "student" can differ from a "teacher"), e.g. `--teacher mock:t --student mock:s:sharpness=2`.
//!
//! For tests of interrupted runs, `HARNESS_MOCK_FAIL_AFTER=N` in the environment makes every
//! mock fail its log-likelihood requests after the first N (an environment variable, not part
//! of the spec, so that the cache key of the rerun is the same).

use anyhow::{bail, Result};
use reports::CheckpointInfo;
use tasks::request::{Generation, Request, RequestKind, Response};

use super::backend::{loglikelihoods, rolling_loglikelihood};
use super::{Backend, Batched, TextInput};

/// Size of the mock vocabulary.
const VOCAB: usize = 64;

/// Embeddings are letter counts (so similar texts get similar vectors); logits favour label
/// `len(text) % labels`. As a causal LM a word is a token (id from its letters), and the
/// next-token logits peak at the current id + 1.
pub struct MockBackend {
    info: CheckpointInfo,
    labels: Option<Vec<String>>,
    sharpness: f32,
    /// Log-likelihood requests answered so far, and after how many to fail.
    answered: std::sync::atomic::AtomicUsize,
    fail_after: Option<usize>,
}

impl MockBackend {
    pub fn new(id: &str, labels: Option<Vec<String>>) -> Self {
        MockBackend {
            info: CheckpointInfo {
                id: id.into(),
                resolved: format!("mock:{id}"),
                architecture: "mock".into(),
                parameters: 1000,
                bytes_on_disk: 4000,
                head_labels: labels.clone(),
                weight_bytes: None,
                quantization: None,
                tokenizer: None,
                kernels: Default::default(),
            },
            labels,
            sharpness: 1.0,
            answered: Default::default(),
            fail_after: std::env::var("HARNESS_MOCK_FAIL_AFTER")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }

    /// From the part of a `mock:` argument after the colon (`NAME[:labels=a,b][:sharpness=X]`).
    /// Record a quantization that was asked for (outputs are unchanged: a mock has no weights).
    pub fn mark_quantized(&mut self, format: &str) {
        self.info.quantization = Some(format!("{format} (mock: outputs unchanged)"));
    }

    pub fn from_spec(spec: &str) -> Result<Self> {
        let mut parts = spec.split(':');
        let name = parts.next().filter(|n| !n.is_empty()).unwrap_or("mock");
        let mut mock = MockBackend::new(&format!("mock:{spec}"), None);
        mock.info.resolved = format!("mock model {name}");
        for part in parts {
            match part.split_once('=') {
                Some(("labels", l)) => {
                    let labels: Vec<String> = l.split(',').map(str::to_string).collect();
                    mock.info.head_labels = Some(labels.clone());
                    mock.labels = Some(labels);
                }
                Some(("sharpness", x)) => match x.parse::<f32>() {
                    Ok(v) if v > 0.0 && v.is_finite() => mock.sharpness = v,
                    _ => bail!("mock:{spec}: sharpness must be a positive number, got '{x}'"),
                },
                _ => bail!("mock:{spec}: unknown option '{part}' (labels=a,b or sharpness=X)"),
            }
        }
        Ok(mock)
    }

    fn text(input: &TextInput) -> String {
        format!("{} {}", input.a, input.b.unwrap_or(""))
    }

    /// Wrap output rows; a mock "token" is a word, plus two special tokens per input.
    fn batched(inputs: &[TextInput], rows: Vec<Vec<f32>>) -> Batched {
        Batched {
            token_counts: inputs
                .iter()
                .map(|i| Self::text(i).split_whitespace().count() + 2)
                .collect(),
            rows,
            n_truncated: 0,
            forward_s: 0.0,
        }
    }

    fn logits(&self, task: &str, inputs: &[TextInput]) -> Result<Batched> {
        let Some(labels) = &self.labels else {
            bail!("task {task}: mock model {} has no head", self.info.id);
        };
        let rows = inputs
            .iter()
            .map(|i| {
                let pick = Self::text(i).len() % labels.len();
                (0..labels.len())
                    .map(|k| if k == pick { 2.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        Ok(Self::batched(inputs, rows))
    }

    fn embeddings(&self, inputs: &[TextInput]) -> Batched {
        let rows = inputs
            .iter()
            .map(|i| {
                let mut v = vec![0.0f32; 26];
                for c in i.a.chars().filter(char::is_ascii_alphabetic) {
                    v[(c.to_ascii_lowercase() as u8 - b'a') as usize] += 1.0;
                }
                v
            })
            .collect();
        Self::batched(inputs, rows)
    }

    /// A word's token id: the sum of its bytes, in 1..VOCAB.
    fn token_of(word: &str) -> u32 {
        1 + (word.bytes().map(u32::from).sum::<u32>() % (VOCAB as u32 - 1))
    }

    fn generate(&self, prompt: &str, max_new_tokens: usize) -> Result<Generation> {
        let (ids, _) = self.tokenize(prompt)?;
        let Some(&last) = ids.last() else {
            bail!("the prompt '{prompt}' has no tokens");
        };
        let tokens: Vec<u32> = (1..=max_new_tokens as u32)
            .map(|i| (last + i) % VOCAB as u32)
            .collect();
        Ok(Generation {
            text: tokens
                .iter()
                .map(|t| format!("w{t}"))
                .collect::<Vec<_>>()
                .join(" "),
            tokens,
            stopped_at_eos: false,
            prompt_tokens: ids.len(),
            ttft_s: 0.0,
            decode_s: 0.0,
        })
    }
}

impl Backend for MockBackend {
    fn info(&self) -> &CheckpointInfo {
        &self.info
    }
    fn answers(&self) -> &'static [RequestKind] {
        &[
            RequestKind::Classify,
            RequestKind::Embed,
            RequestKind::LogLikelihood,
            RequestKind::LogLikelihoodRolling,
            RequestKind::Generate,
        ]
    }
    fn head_labels(&self) -> Option<&[String]> {
        self.labels.as_deref()
    }
    fn run(&self, task: &str, request: Request) -> Result<Response> {
        Ok(match request {
            Request::Classify { inputs, .. } => Response::Rows(self.logits(task, inputs)?),
            Request::Embed { inputs, .. } => Response::Rows(self.embeddings(inputs)),
            Request::LogLikelihood { pairs, batch_size } => {
                let n = self
                    .answered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if self.fail_after.is_some_and(|limit| n >= limit) {
                    bail!("mock: stopped after {n} requests (HARNESS_MOCK_FAIL_AFTER)");
                }
                Response::LogLikelihoods(loglikelihoods(self, pairs, batch_size)?)
            }
            Request::LogLikelihoodRolling { text, window } => {
                Response::Rolling(rolling_loglikelihood(self, text, window)?)
            }
            Request::Generate {
                prompts,
                max_new_tokens,
            } => Response::Generations(
                prompts
                    .iter()
                    .map(|p| self.generate(p, max_new_tokens))
                    .collect::<Result<_>>()?,
            ),
        })
    }
    fn tokenize(&self, text: &str) -> Result<(Vec<u32>, Vec<usize>)> {
        let (mut ids, mut ends) = (Vec::new(), Vec::new());
        let mut at = 0;
        for word in text.split_whitespace() {
            let start = at + text[at..].find(word).expect("a word of the text");
            at = start + word.len();
            ids.push(Self::token_of(word));
            ends.push(at);
        }
        Ok((ids, ends))
    }
    fn window_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        Ok(ids
            .iter()
            .map(|&id| {
                let next = (id as usize + 1) % VOCAB;
                (0..VOCAB)
                    .map(|k| -self.sharpness * (k as f32 - next as f32).abs())
                    .collect()
            })
            .collect())
    }
    fn vocabulary_id(&self) -> Option<u64> {
        Some(VOCAB as u64)
    }
    fn flops_per_token(&self) -> f64 {
        2000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasks::request::ContextContinuation;

    #[test]
    fn a_spec_sets_labels_and_sharpness_and_bad_options_are_named() {
        let m = MockBackend::from_spec("t:labels=neg,pos:sharpness=2").unwrap();
        assert_eq!(m.head_labels().unwrap(), ["neg", "pos"]);
        assert_eq!(m.sharpness, 2.0);
        let e = MockBackend::from_spec("t:colour=red")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown option 'colour=red'"), "{e}");
        let e = MockBackend::from_spec("t:sharpness=-1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sharpness must be a positive number"), "{e}");
    }

    #[test]
    fn loglikelihood_sums_the_continuations_log_softmax_and_knows_greedy() {
        let m = MockBackend::new("m", None);
        // "a" is token 1 + 97 % 63 = 35; the mock predicts 36 next, most likely.
        let (ids, ends) = m.tokenize("a  bb").unwrap();
        assert_eq!(ids, [35, 1 + (196 % 63)]);
        assert_eq!(ends, [1, 5]);
        let backend: &dyn Backend = &m;
        let out = backend
            .run(
                "t",
                Request::LogLikelihood {
                    pairs: &[ContextContinuation {
                        context: "a".into(),
                        continuation: " bb".into(),
                    }],
                    batch_size: 1,
                },
            )
            .unwrap()
            .into_loglikelihoods()
            .unwrap();
        // Row for "a": logits -|k - 36|; log softmax at bb's id (8), by hand in f64.
        let row: Vec<f64> = (0..64).map(|k| -((k as f64) - 36.0).abs()).collect();
        let z: f64 = row.iter().map(|v| v.exp()).sum::<f64>().ln();
        let want = row[8] - z;
        assert_eq!(out.len(), 1);
        assert!((out[0].logprob - want).abs() < 1e-9, "{out:?} vs {want}");
        assert!(!out[0].is_greedy);
        assert_eq!(out[0].tokens, 1);
    }
}
