//! The language-modelling tasks: `wikitext2` and `wikitext103` (sliding-window perplexity of a
//! raw text) and `generate` (greedy continuations of fixed prompts, for decoding speed and
//! how closely a student follows its teacher). Like the GLUE tasks they know their data and
//! their metrics; a backend only supplies log-likelihoods and tokens.

use std::path::{Path, PathBuf};

use super::perplexity::NllSum;
use super::wikitext::RawText;
use crate::data::DataError;
use crate::Metrics;

/// What a language-modelling task asks of a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LmKind {
    /// Log-likelihood of every token of a text (sliding windows).
    Perplexity,
    /// Greedy continuations of prompts.
    Generate,
    /// Log-likelihoods of each choice of each example (multiple choice and cloze).
    Choice,
}

/// Where a language-modelling task's data comes from.
#[derive(Debug, Clone)]
pub enum LmSource {
    /// A local folder (`--data-dir`).
    Dir(PathBuf),
    /// The `text` column of the Hub dataset's split, row by row.
    HubRows { origin: String, rows: Vec<String> },
    /// Whole rows of the Hub dataset's split (column -> value), and of its few-shot split
    /// when one was fetched.
    HubRecords {
        origin: String,
        rows: Vec<std::collections::BTreeMap<String, serde_json::Value>>,
        fewshot: Vec<std::collections::BTreeMap<String, serde_json::Value>>,
    },
}

/// How much of a task to load and how to prompt it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The first N examples (`--limit`); MMLU takes the first N of each subject.
    pub limit: Option<usize>,
    /// Answered examples put before each question (`--num-fewshot`), for tasks with a
    /// few-shot split.
    pub num_fewshot: usize,
}

/// A loaded language-modelling data set.
#[derive(Debug, Clone)]
pub enum LmData {
    Text(RawText),
    Prompts(Vec<String>),
    Choices(crate::choice::ChoiceSet),
}

/// A language-modelling task plugin.
pub trait LmTask: Sync + Send {
    fn name(&self) -> &'static str;
    /// Bumped whenever data reading or scoring changes numbers.
    fn version(&self) -> u32;
    fn description(&self) -> &'static str;
    fn kind(&self) -> LmKind;
    /// The metric a report leads with.
    fn primary_metric(&self) -> &'static str;
    /// Whether a smaller primary metric is better (perplexity).
    fn lower_is_better(&self) -> bool;
    /// `(repository, config, split)` of the Hub dataset, when the task has one.
    fn hub_dataset(&self) -> Option<(&'static str, &'static str, &'static str)>;
    fn load(&self, source: &LmSource, options: &LoadOptions) -> Result<LmData, DataError>;
    /// The Hub split few-shot examples come from, when the task has one.
    fn fewshot_split(&self) -> Option<&'static str> {
        None
    }
}

/// WikiText perplexity on the raw test split.
pub struct WikiTextTask {
    pub name: &'static str,
    pub description: &'static str,
    /// Folders inside `--data-dir` to look in, in order (the name the shared data and the
    /// canonical zip use).
    pub folders: &'static [&'static str],
    pub hub_config: &'static str,
}

pub static WIKITEXT2: WikiTextTask = WikiTextTask {
    name: "wikitext2",
    description: "WikiText-2 raw test: token and word perplexity, bits per byte (sliding window)",
    folders: &["wikitext-2", "wikitext-2-raw"],
    hub_config: "wikitext-2-raw-v1",
};

pub static WIKITEXT103: WikiTextTask = WikiTextTask {
    name: "wikitext103",
    description: "WikiText-103 raw test (same text as WikiText-2's test): perplexity",
    folders: &["wikitext-103", "wikitext-103-raw"],
    hub_config: "wikitext-103-raw-v1",
};

/// The file a WikiText task reads inside `dir`: `dir/<folder>/wiki.test.raw` for each known
/// folder name, or `dir/wiki.test.raw` when the folder itself was given.
fn find_raw(dir: &Path, folders: &[&str]) -> PathBuf {
    let direct = dir.join("wiki.test.raw");
    if direct.exists() {
        return direct;
    }
    folders
        .iter()
        .map(|f| dir.join(f).join("wiki.test.raw"))
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join(folders[0]).join("wiki.test.raw"))
}

impl LmTask for WikiTextTask {
    fn name(&self) -> &'static str {
        self.name
    }
    fn version(&self) -> u32 {
        1
    }
    fn description(&self) -> &'static str {
        self.description
    }
    fn kind(&self) -> LmKind {
        LmKind::Perplexity
    }
    fn primary_metric(&self) -> &'static str {
        "perplexity"
    }
    fn lower_is_better(&self) -> bool {
        true
    }
    fn hub_dataset(&self) -> Option<(&'static str, &'static str, &'static str)> {
        Some(("Salesforce/wikitext", self.hub_config, "test"))
    }
    /// `--limit N` keeps the first N articles (62 in the test split), so a smoke run scores a
    /// prefix of the text instead of all of it.
    fn load(&self, source: &LmSource, options: &LoadOptions) -> Result<LmData, DataError> {
        let text = match source {
            LmSource::Dir(dir) => RawText::read(&find_raw(dir, self.folders))?,
            // The Hub's rows are the raw file's lines with their line ends; joined with
            // "\n\n" as the Hugging Face perplexity guide does.
            LmSource::HubRows { origin, rows } => RawText::new(rows.join("\n\n"), origin)?,
            LmSource::HubRecords { origin, .. } => {
                return Err(DataError::Other(format!(
                    "{origin}: {} reads the Hub's text column, not whole rows",
                    self.name
                )))
            }
        };
        Ok(LmData::Text(match options.limit {
            Some(n) => text.first_articles(n)?,
            None => text,
        }))
    }
}

/// Greedy continuations of fixed prompts: time to first token, decode speed, and (against the
/// teacher) how often the student continues the same way.
pub struct GenerateTask;

pub static GENERATE: GenerateTask = GenerateTask;

/// Fixed prompts: plain English openings of several kinds (encyclopaedic, narrative,
/// instructional, technical), none from WikiText's test split.
pub const PROMPTS: &[&str] = &[
    "The history of the printing press begins",
    "Once upon a time, in a small village by the sea,",
    "To make a cup of tea, first",
    "The main difference between a compiler and an interpreter is",
    "In 1969, astronauts landed on the Moon and",
    "The best way to learn a new language is",
    "Photosynthesis is the process by which plants",
    "The city council met on Tuesday to discuss",
];

impl LmTask for GenerateTask {
    fn name(&self) -> &'static str {
        "generate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn description(&self) -> &'static str {
        "greedy continuations of 8 fixed prompts: time to first token, decode tokens/s"
    }
    fn kind(&self) -> LmKind {
        LmKind::Generate
    }
    fn primary_metric(&self) -> &'static str {
        "new_tokens_mean"
    }
    fn lower_is_better(&self) -> bool {
        false
    }
    fn hub_dataset(&self) -> Option<(&'static str, &'static str, &'static str)> {
        None
    }
    fn load(&self, _source: &LmSource, options: &LoadOptions) -> Result<LmData, DataError> {
        let n = options.limit.unwrap_or(PROMPTS.len()).max(1);
        Ok(LmData::Prompts(
            PROMPTS.iter().take(n).map(|p| p.to_string()).collect(),
        ))
    }
}

/// The metrics of a perplexity run over `text`: token perplexity (the primary `perplexity`),
/// word perplexity and bits per byte (both comparable across tokenizers).
pub fn perplexity_metrics(nll: &NllSum, text: &RawText) -> Metrics {
    let mut m = Metrics::new();
    m.insert("perplexity".into(), nll.token_perplexity());
    m.insert("word_perplexity".into(), nll.word_perplexity(text.words));
    m.insert("bits_per_byte".into(), nll.bits_per_byte(text.bytes));
    m.insert("tokens_scored".into(), nll.tokens_scored as f64);
    m.insert("words".into(), text.words as f64);
    m
}

/// The metrics of a generation run: new tokens per prompt and how many stopped at the end-of-
/// sequence token.
pub fn generation_metrics(new_tokens: &[usize], stopped_at_eos: &[bool]) -> Metrics {
    let n = new_tokens.len().max(1) as f64;
    let mut m = Metrics::new();
    m.insert(
        "new_tokens_mean".into(),
        new_tokens.iter().sum::<usize>() as f64 / n,
    );
    m.insert(
        "eos_rate".into(),
        stopped_at_eos.iter().filter(|&&s| s).count() as f64 / n,
    );
    m
}

/// How closely two greedy continuations of the same prompt agree, token by token: the
/// fraction of positions (over the longer continuation) holding the same token, and whether
/// the two are identical.
pub fn continuation_match(teacher: &[u32], student: &[u32]) -> (f64, bool) {
    let longest = teacher.len().max(student.len());
    if longest == 0 {
        return (1.0, true);
    }
    let same = teacher.iter().zip(student).filter(|(a, b)| a == b).count();
    (same as f64 / longest as f64, teacher == student)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perplexity_metrics_by_hand() {
        let text = RawText::new("a b c d".into(), "x").unwrap();
        let nll = NllSum {
            nll: 8.0,
            tokens_scored: 4,
            windows: 1,
        };
        let m = perplexity_metrics(&nll, &text);
        assert!((m["perplexity"] - 2f64.exp()).abs() < 1e-12);
        assert!((m["word_perplexity"] - 2f64.exp()).abs() < 1e-12);
        assert!((m["bits_per_byte"] - 8.0 / (7.0 * std::f64::consts::LN_2)).abs() < 1e-12);
    }

    #[test]
    fn continuation_match_counts_positions() {
        assert_eq!(
            continuation_match(&[1, 2, 3, 4], &[1, 2, 9, 4]),
            (0.75, false)
        );
        assert_eq!(continuation_match(&[1, 2], &[1, 2, 3, 4]), (0.5, false));
        assert_eq!(continuation_match(&[5], &[5]), (1.0, true));
    }

    #[test]
    fn generation_metrics_by_hand() {
        let m = generation_metrics(&[4, 2], &[false, true]);
        assert_eq!(m["new_tokens_mean"], 3.0);
        assert_eq!(m["eos_rate"], 0.5);
    }

    #[test]
    fn wikitext_reads_the_shared_layout_and_hub_rows() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("wikitext-2")).unwrap();
        std::fs::write(
            dir.path().join("wikitext-2/wiki.test.raw"),
            " = A = \n b c\n",
        )
        .unwrap();
        let LmData::Text(t) = WIKITEXT2
            .load(&LmSource::Dir(dir.path().into()), &LoadOptions::default())
            .unwrap()
        else {
            panic!("expected text")
        };
        assert_eq!(t.words, 5);
        // The folder itself works too.
        assert!(WIKITEXT2
            .load(
                &LmSource::Dir(dir.path().join("wikitext-2")),
                &LoadOptions::default()
            )
            .is_ok());
        let err = WIKITEXT103
            .load(&LmSource::Dir(dir.path().into()), &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("wikitext-103/wiki.test.raw"), "{err}");
        let LmData::Text(t) = WIKITEXT2
            .load(
                &LmSource::HubRows {
                    origin: "hub".into(),
                    rows: vec![" = A = \n".into(), " b c\n".into()],
                },
                &LoadOptions::default(),
            )
            .unwrap()
        else {
            panic!("expected text")
        };
        assert_eq!(t.text, " = A = \n\n\n b c\n");
    }
}
