//! Zero-shot multiple-choice and cloze tasks for causal LMs, scored as lm-evaluation-harness
//! scores them: each choice is a `loglikelihood` request (context, continuation), the model's
//! answer is the choice with the highest summed log-probability, and
//!
//! - `acc`: that answer is the gold one;
//! - `acc_norm`: the answer by log-likelihood divided by the choice's length in characters
//!   (lm-eval's `completion_len`, the length of the `doc_to_choice` string without the space
//!   the request puts before it);
//! - `acc_bytes`: the same divided by the choice's length in UTF-8 bytes;
//!
//! each with its standard error (sample standard deviation over examples / sqrt(n), lm-eval's
//! `mean_stderr`). Ties go to the first choice, as `numpy.argmax` gives them. The cloze task
//! (`lambada_openai`) asks one request per example: `acc` is whether greedy decoding gives the
//! last word, `perplexity` is exp(-mean log-likelihood of it).
//!
//! The prompts are lm-eval's (`Question: ...\nAnswer:` for ARC, and so on, written out with
//! each task in [`formats`]); a change to any of them bumps the task's version.
//!
//! Upstream: <https://github.com/EleutherAI/lm-evaluation-harness/blob/main/lm_eval/api/task.py>
//! (`process_results`, `multiple_choice`) and the task folders under `lm_eval/tasks/`.

pub mod formats;

use crate::numeric::{argmax, mean_and_stderr};
use crate::request::{ContextContinuation, LogLikelihood};
use crate::Metrics;

/// One example: the requests its choices make, and the gold choice.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChoiceDoc {
    /// The row's own id when it has one, else its 0-based position.
    pub id: String,
    /// lm-eval's `doc_to_choice`: the strings whose lengths `acc_norm` and `acc_bytes` divide by.
    pub choices: Vec<String>,
    /// One context and continuation per choice. The context is the same for every choice
    /// except in WinoGrande, where each option completes its own context.
    pub requests: Vec<ContextContinuation>,
    pub gold: usize,
    /// The MMLU subject, for per-subject figures.
    pub group: Option<String>,
}

impl ChoiceDoc {
    /// A short text of the example for reports: the first request's context, cut.
    pub fn summary(&self) -> String {
        let c = self.requests.first().map_or("", |r| r.context.as_str());
        let c = c.trim();
        match c.char_indices().nth(160) {
            Some((at, _)) => format!("{}…", &c[..at]),
            None => c.to_string(),
        }
    }
}

/// A loaded multiple-choice or cloze data set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChoiceSet {
    pub docs: Vec<ChoiceDoc>,
    /// The file(s) or Hub split the rows came from.
    pub origin: String,
    pub scoring: Scoring,
}

impl ChoiceSet {
    /// What the paired statistics and the predictions file read of the set, for a shard's
    /// folder (`harness merge` recomputes them): each doc's id, choices, gold and group, and
    /// its first context cut to [`ChoiceDoc::summary`] (a 5-shot MMLU's contexts would be
    /// hundreds of megabytes, and no statistic reads them).
    pub fn reference(&self) -> ChoiceSet {
        let docs = self
            .docs
            .iter()
            .map(|d| ChoiceDoc {
                requests: vec![ContextContinuation {
                    context: d.summary(),
                    continuation: String::new(),
                }],
                ..d.clone()
            })
            .collect();
        ChoiceSet {
            docs,
            origin: self.origin.clone(),
            scoring: self.scoring,
        }
    }
}

/// How a task turns log-likelihoods into scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Scoring {
    /// Pick the most likely choice: `acc`, and `acc_norm` / `acc_bytes` when `normalised`.
    MultipleChoice { normalised: bool },
    /// One continuation per example: greedy `acc` and the continuation's `perplexity`.
    Cloze,
}

/// One model's answer to one example: each choice's log-likelihood and greediness.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DocAnswer {
    pub logprobs: Vec<f64>,
    pub greedy: Vec<bool>,
    /// Tokens each continuation became.
    #[serde(default)]
    pub tokens: Vec<usize>,
}

impl DocAnswer {
    pub fn from_loglikelihoods(lls: &[LogLikelihood]) -> Self {
        DocAnswer {
            logprobs: lls.iter().map(|l| l.logprob).collect(),
            greedy: lls.iter().map(|l| l.is_greedy).collect(),
            tokens: lls.iter().map(|l| l.tokens).collect(),
        }
    }
}

/// What a doc's answer picks under each rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picks {
    pub raw: usize,
    pub chars: usize,
    pub bytes: usize,
}

pub fn picks(doc: &ChoiceDoc, answer: &DocAnswer) -> Picks {
    let per = |len: fn(&str) -> usize| {
        argmax(
            answer
                .logprobs
                .iter()
                .zip(&doc.choices)
                .map(|(l, c)| l / len(c) as f64),
        )
    };
    Picks {
        raw: argmax(answer.logprobs.iter().copied()),
        chars: per(|c| c.chars().count()),
        bytes: per(str::len),
    }
}

/// A model's answer to one example under the metric `metric` (`acc`, `acc_norm`,
/// `acc_bytes`): the index of the choice it picks, or for a cloze task 1 when greedy decoding
/// gives the target and 0 when not.
pub fn pick(scoring: Scoring, doc: &ChoiceDoc, answer: &DocAnswer, metric: &str) -> usize {
    match scoring {
        Scoring::Cloze => usize::from(answer.greedy.first().copied().unwrap_or(false)),
        Scoring::MultipleChoice { .. } => {
            let p = picks(doc, answer);
            match metric {
                "acc_norm" => p.chars,
                "acc_bytes" => p.bytes,
                _ => p.raw,
            }
        }
    }
}

/// Per-example correctness (1 or 0) under the metric `metric` (`acc`, `acc_norm`,
/// `acc_bytes`), in doc order: what the paired statistics resample.
pub fn correct(
    scoring: Scoring,
    docs: &[ChoiceDoc],
    answers: &[DocAnswer],
    metric: &str,
) -> Vec<f64> {
    // A cloze answer is right when its "pick" is 1 (greedy); a choice when it is the gold one.
    docs.iter()
        .zip(answers)
        .map(|(d, a)| {
            let want = match scoring {
                Scoring::Cloze => 1,
                Scoring::MultipleChoice { .. } => d.gold,
            };
            f64::from(u8::from(pick(scoring, d, a, metric) == want))
        })
        .collect()
}

/// The task's metrics over every example: `acc` (and `acc_norm`, `acc_bytes` when the task is
/// normalised, `perplexity` for a cloze task), each with `<metric>_stderr`; with groups (MMLU
/// subjects), `acc_<group>` for each and `acc_macro`, their unweighted mean.
pub fn score(scoring: Scoring, docs: &[ChoiceDoc], answers: &[DocAnswer]) -> Metrics {
    let mut m = Metrics::new();
    let put = |m: &mut Metrics, name: &str, values: &[f64]| {
        let (mean, se) = mean_and_stderr(values);
        m.insert(name.to_string(), mean);
        // One example has no standard error; JSON has no NaN, so the figure is left out.
        if se.is_finite() {
            m.insert(format!("{name}_stderr"), se);
        }
    };
    put(&mut m, "acc", &correct(scoring, docs, answers, "acc"));
    match scoring {
        Scoring::MultipleChoice { normalised: true } => {
            for name in ["acc_norm", "acc_bytes"] {
                put(&mut m, name, &correct(scoring, docs, answers, name));
            }
        }
        Scoring::MultipleChoice { normalised: false } => {}
        Scoring::Cloze => {
            let lls: Vec<f64> = answers
                .iter()
                .map(|a| a.logprobs.first().copied().unwrap_or(f64::NAN))
                .collect();
            let (mean, _) = mean_and_stderr(&lls);
            m.insert("perplexity".into(), (-mean).exp());
        }
    }
    let mut groups: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let acc = correct(scoring, docs, answers, "acc");
    for (d, ok) in docs.iter().zip(&acc) {
        if let Some(g) = &d.group {
            groups.entry(g.as_str()).or_default().push(*ok);
        }
    }
    if !groups.is_empty() {
        let mut means = Vec::new();
        for (g, v) in &groups {
            let (mean, _) = mean_and_stderr(v);
            m.insert(format!("acc_{g}"), mean);
            means.push(mean);
        }
        m.insert(
            "acc_macro".into(),
            means.iter().sum::<f64>() / means.len() as f64,
        );
        m.insert("groups".into(), groups.len() as f64);
    }
    m.insert("examples".into(), docs.len() as f64);
    m
}

/// The probability a model gives each choice: softmax of the log-likelihoods (lm-eval's
/// `prob_norm`), for calibration and the KL between teacher and student answers.
pub fn choice_probs(answer: &DocAnswer) -> Vec<f64> {
    crate::numeric::softmax(&answer.logprobs)
}

/// A multiple-choice or cloze task, declared as data: its layout (reader and prompt), how it
/// is scored, where its files are and where it is on the Hub.
pub struct ChoiceTask {
    pub name: &'static str,
    pub description: &'static str,
    /// Bumped when the prompt, the reading or the scoring changes.
    pub version: u32,
    pub layout: formats::Layout,
    pub scoring: Scoring,
    pub files: formats::LocalFiles,
    /// `(repository, config, split)` of the Hub dataset.
    pub hub: (&'static str, &'static str, &'static str),
    /// The split few-shot examples come from (MMLU's `dev`), when the task has one.
    pub fewshot_split: Option<&'static str>,
}

impl ChoiceTask {
    /// `acc_norm` where the task defines it (lm-eval reports ARC, HellaSwag, PIQA,
    /// OpenBookQA and SciQ by it), else `acc`.
    pub fn primary_metric(&self) -> &'static str {
        match self.scoring {
            Scoring::MultipleChoice { normalised: true } => "acc_norm",
            _ => "acc",
        }
    }
}

impl crate::generation::tasks::LmTask for ChoiceTask {
    fn name(&self) -> &'static str {
        self.name
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn description(&self) -> &'static str {
        self.description
    }
    fn kind(&self) -> crate::generation::tasks::LmKind {
        crate::generation::tasks::LmKind::Choice
    }
    fn primary_metric(&self) -> &'static str {
        ChoiceTask::primary_metric(self)
    }
    fn lower_is_better(&self) -> bool {
        false
    }
    fn hub_dataset(&self) -> Option<(&'static str, &'static str, &'static str)> {
        Some(self.hub)
    }
    fn fewshot_split(&self) -> Option<&'static str> {
        self.fewshot_split
    }
    fn load(
        &self,
        source: &crate::generation::tasks::LmSource,
        options: &crate::generation::tasks::LoadOptions,
    ) -> Result<crate::generation::tasks::LmData, crate::DataError> {
        use crate::generation::tasks::{LmData, LmSource};
        if options.num_fewshot > 0 && self.fewshot_split.is_none() {
            return Err(crate::DataError::Other(format!(
                "--num-fewshot: {} has no few-shot split; it is scored zero-shot only",
                self.name
            )));
        }
        let (rows, origin, fewshot) = match source {
            LmSource::Dir(dir) => {
                let (rows, origin) = formats::read_local(self.layout, dir, &self.files)?;
                let fewshot = match (self.layout, options.num_fewshot) {
                    (Layout::Mmlu, n) if n > 0 => {
                        let test = dir.join(self.files.candidates[0]);
                        let dev = test.with_file_name("dev");
                        formats::read_mmlu_dir(
                            &dev,
                            "dev",
                            "MMLU's dev/ folder beside test/ (few-shot examples)",
                        )?
                        .0
                    }
                    _ => Vec::new(),
                };
                (rows, origin, fewshot)
            }
            LmSource::HubRecords {
                origin,
                rows,
                fewshot,
            } => (
                formats::hub_records(origin, rows),
                origin.clone(),
                formats::hub_records(&format!("{origin} (few-shot)"), fewshot),
            ),
            LmSource::HubRows { origin, .. } => {
                return Err(crate::DataError::Other(format!(
                    "{origin}: {} needs whole rows of its Hub dataset",
                    self.name
                )))
            }
        };
        let mut set = formats::build(self.layout, self.scoring, &rows, &origin, options.limit)?;
        if options.num_fewshot > 0 {
            formats::add_mmlu_fewshot(&mut set, &fewshot, options.num_fewshot)?;
            set.origin = format!("{} ({}-shot)", set.origin, options.num_fewshot);
        }
        Ok(LmData::Choices(set))
    }
}

const NORMALISED: Scoring = Scoring::MultipleChoice { normalised: true };
const PLAIN: Scoring = Scoring::MultipleChoice { normalised: false };
use formats::{Layout, LocalFiles};

pub static ARC_EASY: ChoiceTask = ChoiceTask {
    name: "arc_easy",
    description: "ARC-Easy test (2,376): 'Question: ...\\nAnswer:', acc and acc_norm (lm-eval)",
    version: 1,
    layout: Layout::Arc,
    scoring: NORMALISED,
    files: LocalFiles {
        candidates: &[
            "arc/ARC-Easy-Test.jsonl",
            "ARC-Easy/ARC-Easy-Test.jsonl",
            "ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Test.jsonl",
        ],
        hint: "the AI2 ARC release file, or run without --data-dir to read allenai/ai2_arc",
    },
    hub: ("allenai/ai2_arc", "ARC-Easy", "test"),
    fewshot_split: None,
};

pub static ARC_CHALLENGE: ChoiceTask = ChoiceTask {
    name: "arc_challenge",
    description:
        "ARC-Challenge test (1,172): 'Question: ...\\nAnswer:', acc and acc_norm (lm-eval)",
    version: 1,
    layout: Layout::Arc,
    scoring: NORMALISED,
    files: LocalFiles {
        candidates: &[
            "arc/ARC-Challenge-Test.jsonl",
            "ARC-Challenge/ARC-Challenge-Test.jsonl",
            "ARC-V1-Feb2018-2/ARC-Challenge/ARC-Challenge-Test.jsonl",
        ],
        hint: "the AI2 ARC release file, or run without --data-dir to read allenai/ai2_arc",
    },
    hub: ("allenai/ai2_arc", "ARC-Challenge", "test"),
    fewshot_split: None,
};

pub static PIQA: ChoiceTask = ChoiceTask {
    name: "piqa",
    description:
        "PIQA validation (1,838): 'Question: {goal}\\nAnswer:', two solutions, acc and acc_norm",
    version: 1,
    layout: Layout::Piqa,
    scoring: NORMALISED,
    files: LocalFiles {
        candidates: &["piqa/valid.jsonl"],
        hint: "piqa/valid.jsonl with valid-labels.lst beside it",
    },
    hub: ("baber/piqa", "default", "validation"),
    fewshot_split: None,
};

pub static WINOGRANDE: ChoiceTask = ChoiceTask {
    name: "winogrande",
    description: "WinoGrande 1.1 dev (1,267), partial scoring of the sentence after the blank, acc",
    version: 1,
    layout: Layout::Winogrande,
    scoring: PLAIN,
    files: LocalFiles {
        candidates: &["winogrande/dev.jsonl", "winogrande_1.1/dev.jsonl"],
        hint: "winogrande/dev.jsonl from the WinoGrande 1.1 release",
    },
    hub: ("allenai/winogrande", "winogrande_xl", "validation"),
    fewshot_split: None,
};

pub static BOOLQ: ChoiceTask = ChoiceTask {
    name: "boolq",
    description:
        "BoolQ validation (3,270): '{passage}\\nQuestion: {question}?\\nAnswer:' no/yes, acc",
    version: 1,
    layout: Layout::Boolq,
    scoring: PLAIN,
    files: LocalFiles {
        candidates: &["boolq/val.jsonl", "BoolQ/val.jsonl"],
        hint: "SuperGLUE's BoolQ/val.jsonl",
    },
    hub: ("aps/super_glue", "boolq", "validation"),
    fewshot_split: None,
};

pub static LAMBADA_OPENAI: ChoiceTask = ChoiceTask {
    name: "lambada_openai",
    description: "LAMBADA OpenAI test (5,153): the last word, greedy acc and its perplexity",
    version: 1,
    layout: Layout::Lambada,
    scoring: Scoring::Cloze,
    files: LocalFiles {
        candidates: &[
            "lambada/lambada_test.jsonl",
            "lambada_openai/lambada_test.jsonl",
        ],
        hint: "lambada/lambada_test.jsonl (OpenAI's detokenised test set)",
    },
    hub: ("EleutherAI/lambada_openai", "default", "test"),
    fewshot_split: None,
};

pub static MMLU: ChoiceTask = ChoiceTask {
    name: "mmlu",
    description:
        "MMLU test (14,042, 57 subjects): lm-eval's prompt, letters A-D, acc, per subject and macro",
    version: 1,
    layout: Layout::Mmlu,
    scoring: PLAIN,
    files: LocalFiles {
        candidates: &["mmlu/test", "data/test"],
        hint: "the folder of <subject>_test.csv files of the MMLU release",
    },
    hub: ("cais/mmlu", "all", "test"),
    fewshot_split: Some("dev"),
};

pub static HELLASWAG: ChoiceTask = ChoiceTask {
    name: "hellaswag",
    description: "HellaSwag validation (10,042): lm-eval's preprocessing, acc and acc_norm",
    version: 1,
    layout: Layout::Hellaswag,
    scoring: NORMALISED,
    files: LocalFiles {
        candidates: &["hellaswag/hellaswag_val.jsonl", "hellaswag_val.jsonl"],
        hint: "hellaswag/hellaswag_val.jsonl from the HellaSwag release, or run without --data-dir to read Rowan/hellaswag",
    },
    hub: ("Rowan/hellaswag", "default", "validation"),
    fewshot_split: None,
};

pub static OPENBOOKQA: ChoiceTask = ChoiceTask {
    name: "openbookqa",
    description: "OpenBookQA main test (500): the question stem, acc and acc_norm",
    version: 1,
    layout: Layout::OpenBookQa,
    scoring: NORMALISED,
    files: LocalFiles {
        candidates: &[
            "openbookqa/Main/test.jsonl",
            "OpenBookQA-V1-Sep2018/Data/Main/test.jsonl",
            "openbookqa/test.jsonl",
        ],
        hint: "openbookqa/Main/test.jsonl from the OpenBookQA release",
    },
    hub: ("allenai/openbookqa", "main", "test"),
    fewshot_split: None,
};

pub static SCIQ: ChoiceTask = ChoiceTask {
    name: "sciq",
    description: "SciQ test (1,000): '{support}\\nQuestion: ...\\nAnswer:', acc and acc_norm",
    version: 1,
    layout: Layout::Sciq,
    scoring: NORMALISED,
    files: LocalFiles {
        candidates: &["sciq/test.json", "SciQ dataset-2 3/test.json"],
        hint: "sciq/test.json from the SciQ release",
    },
    hub: ("allenai/sciq", "default", "test"),
    fewshot_split: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(choices: &[&str], gold: usize, group: Option<&str>) -> ChoiceDoc {
        ChoiceDoc {
            id: "0".into(),
            choices: choices.iter().map(|c| c.to_string()).collect(),
            requests: choices
                .iter()
                .map(|c| ContextContinuation {
                    context: "Q:".into(),
                    continuation: format!(" {c}"),
                })
                .collect(),
            gold,
            group: group.map(str::to_string),
        }
    }

    fn answer(lls: &[f64]) -> DocAnswer {
        DocAnswer {
            logprobs: lls.to_vec(),
            greedy: vec![false; lls.len()],
            tokens: vec![1; lls.len()],
        }
    }

    #[test]
    fn acc_acc_norm_and_acc_bytes_by_hand() {
        // Raw: choice 0 (-4 > -6). Per character: -4/2 = -2 vs -6/6 = -1, so choice 1.
        // Per byte: "é" is 2 bytes: "aé" is 3 bytes: -4/3 = -1.33; "bbbbbb" -1: choice 1.
        let docs = vec![doc(&["aé", "bbbbbb"], 1, None), doc(&["x", "y"], 0, None)];
        let answers = vec![answer(&[-4.0, -6.0]), answer(&[-1.0, -1.0])];
        let p = picks(&docs[0], &answers[0]);
        assert_eq!((p.raw, p.chars, p.bytes), (0, 1, 1));
        // A tie goes to the first choice, as numpy.argmax.
        assert_eq!(picks(&docs[1], &answers[1]).raw, 0);
        let m = score(
            Scoring::MultipleChoice { normalised: true },
            &docs,
            &answers,
        );
        assert_eq!(m["acc"], 0.5);
        assert_eq!(m["acc_norm"], 1.0);
        assert_eq!(m["acc_bytes"], 1.0);
        // stderr of [0, 1]: sample sd sqrt(0.5), over sqrt(2) = 0.5.
        assert!((m["acc_stderr"] - 0.5).abs() < 1e-12);
        assert_eq!(m["acc_norm_stderr"], 0.0);
        assert!(!m.contains_key("acc_macro"));
    }

    #[test]
    fn unnormalised_tasks_report_acc_only() {
        let m = score(
            Scoring::MultipleChoice { normalised: false },
            &[doc(&["a", "b"], 1, None)],
            &[answer(&[-2.0, -1.0])],
        );
        assert_eq!(m["acc"], 1.0);
        assert!(!m.contains_key("acc_stderr"));
        assert!(!m.contains_key("acc_norm"));
    }

    #[test]
    fn groups_give_per_group_accuracy_and_an_unweighted_macro() {
        let docs = vec![
            doc(&["A", "B"], 0, Some("law")),
            doc(&["A", "B"], 0, Some("law")),
            doc(&["A", "B"], 0, Some("law")),
            doc(&["A", "B"], 0, Some("math")),
        ];
        let right = answer(&[-1.0, -2.0]);
        let wrong = answer(&[-2.0, -1.0]);
        let answers = vec![right.clone(), right.clone(), wrong, right];
        let m = score(
            Scoring::MultipleChoice { normalised: false },
            &docs,
            &answers,
        );
        assert_eq!(m["acc"], 0.75);
        assert!((m["acc_law"] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m["acc_math"], 1.0);
        assert!((m["acc_macro"] - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
        assert_eq!(m["groups"], 2.0);
    }

    #[test]
    fn cloze_accuracy_is_greedy_and_perplexity_is_exp_of_the_mean_negative_loglikelihood() {
        let docs = vec![doc(&["w"], 0, None), doc(&["v"], 0, None)];
        let answers = vec![
            DocAnswer {
                logprobs: vec![-1.0],
                greedy: vec![true],
                tokens: vec![1],
            },
            DocAnswer {
                logprobs: vec![-3.0],
                greedy: vec![false],
                tokens: vec![1],
            },
        ];
        let m = score(Scoring::Cloze, &docs, &answers);
        assert_eq!(m["acc"], 0.5);
        assert!((m["perplexity"] - 2f64.exp()).abs() < 1e-12);
    }

    #[test]
    fn choice_probabilities_are_the_softmax_of_the_loglikelihoods() {
        let p = choice_probs(&answer(&[0.0, 3f64.ln()]));
        assert!((p[0] - 0.25).abs() < 1e-12 && (p[1] - 0.75).abs() < 1e-12);
    }
}
