//! The release layouts of the multiple-choice and cloze data sets, and lm-evaluation-harness's
//! prompt for each. Every row becomes a JSON object first (a jsonl line, an element of a JSON
//! array, a CSV row, a Hub parquet row), so the original files and the Hub's parquet share one
//! reader per task; where the two name their fields differently (ARC's `question.stem` against
//! the Hub's `question`), the reader takes either.
//!
//! Errors name the file and line (or the Hub split and row) and what was expected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{ChoiceDoc, ChoiceSet, Scoring};
use crate::data::{read_utf8, DataError};
use crate::request::ContextContinuation;

/// Which release layout (and prompt) a task reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// AI2 ARC: `question.stem`, `question.choices[{text,label}]`, `answerKey`; prompt
    /// `Question: {stem}\nAnswer:`, choices the texts.
    Arc,
    /// OpenBookQA `Main/test.jsonl`: ARC's layout; prompt the question stem alone.
    OpenBookQa,
    /// PIQA: `goal`, `sol1`, `sol2` and a labels file; prompt `Question: {goal}\nAnswer:`.
    Piqa,
    /// WinoGrande: `sentence` with `_`, `option1`, `option2`, `answer` (1 or 2). Partial
    /// scoring: each option fills the blank as the end of its context, the shared rest of
    /// the sentence is the continuation scored.
    Winogrande,
    /// BoolQ: `passage`, `question`, `label`; prompt `{passage}\nQuestion: {question}?\nAnswer:`,
    /// choices `no`, `yes`.
    Boolq,
    /// LAMBADA (OpenAI): `text`; context all but the last space-separated word, the word (with
    /// its space) the continuation.
    Lambada,
    /// MMLU: CSV rows question, A, B, C, D, answer letter, a file per subject; prompt
    /// lm-eval's (`The following are multiple choice questions (with answers) about
    /// {subject}.\n\n{question}\nA. ...\nAnswer:`), choices the letters.
    Mmlu,
    /// HellaSwag: `activity_label`, `ctx_a`, `ctx_b`, `endings`, `label`, with lm-eval's
    /// preprocessing of the WikiHow brackets.
    Hellaswag,
    /// SciQ `test.json`: `support`, `question`, three distractors, `correct_answer`; prompt
    /// `{support}\nQuestion: {question}\nAnswer:`, the correct answer last.
    Sciq,
}

/// One row as a JSON object, with where it came from.
pub struct Record {
    pub value: Value,
    pub origin: String,
    pub line: usize,
}

impl Record {
    fn bad(&self, message: impl Into<String>) -> DataError {
        DataError::Malformed {
            origin: self.origin.clone(),
            line: self.line,
            message: message.into(),
        }
    }

    /// A string field at `path` (dotted: `question.stem`).
    fn str_at(&self, path: &str) -> Option<&str> {
        let mut v = &self.value;
        for part in path.split('.') {
            v = v.get(part)?;
        }
        v.as_str()
    }

    fn string(&self, path: &str) -> Result<String, DataError> {
        self.str_at(path)
            .map(str::to_string)
            .ok_or_else(|| self.bad(format!("no text field '{path}'")))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.value.get(key)
    }
}

/// Rows of a jsonl file, one object a line (blank lines skipped).
pub fn read_jsonl(path: &Path, hint: &str) -> Result<Vec<Record>, DataError> {
    let text = read_utf8(path, hint)?;
    let origin = path.display().to_string();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}');
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| DataError::Malformed {
            origin: origin.clone(),
            line: i + 1,
            message: format!("not a JSON object ({e})"),
        })?;
        out.push(Record {
            value,
            origin: origin.clone(),
            line: i + 1,
        });
    }
    Ok(out)
}

/// Rows of a JSON file holding one array of objects (SciQ's `test.json`); the "line" of an
/// error is the element's 1-based position.
pub fn read_json_array(path: &Path, hint: &str) -> Result<Vec<Record>, DataError> {
    let text = read_utf8(path, hint)?;
    let origin = path.display().to_string();
    let value: Value = serde_json::from_str(&text).map_err(|e| DataError::Malformed {
        origin: origin.clone(),
        line: e.line(),
        message: format!("not JSON ({e})"),
    })?;
    let Value::Array(items) = value else {
        return Err(DataError::Malformed {
            origin,
            line: 1,
            message: "expected a JSON array of examples".into(),
        });
    };
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, value)| Record {
            value,
            origin: format!("{origin} (element)"),
            line: i + 1,
        })
        .collect())
}

/// RFC 4180 CSV: fields separated by commas, optionally in double quotes (a quote inside is
/// doubled; commas and line breaks inside quotes are text). Returns each row with the line it
/// starts on.
///
/// Not the `csv` crate the design card names: it accepts a quoted field that is never closed and
/// silently reads the rest of the file into it (BurntSushi/rust-csv#252, no option to refuse),
/// so one stray quote in an MMLU file would merge every later question into one field. This
/// reader reports that with the line the field starts on.
pub fn parse_csv(origin: &str, text: &str) -> Result<Vec<(usize, Vec<String>)>, DataError> {
    let text = text.trim_start_matches('\u{feff}');
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let (mut line, mut row_line) = (1usize, 1usize);
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                in_quotes = true;
                at_field_start = false;
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                if !(row.len() == 1 && row[0].is_empty()) {
                    rows.push((row_line, std::mem::take(&mut row)));
                } else {
                    row.clear();
                }
                line += 1;
                row_line = line;
                at_field_start = true;
            }
            _ => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if in_quotes {
        return Err(DataError::Malformed {
            origin: origin.to_string(),
            line: row_line,
            message: "a quoted field is never closed".into(),
        });
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push((row_line, row));
    }
    Ok(rows)
}

/// Labels one a line (PIQA's `valid-labels.lst`).
fn read_labels(path: &Path) -> Result<Vec<(usize, String)>, DataError> {
    let text = read_utf8(path, "PIQA ships its labels beside the jsonl")?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .collect())
}

fn cc(context: &str, continuation: String) -> ContextContinuation {
    ContextContinuation {
        context: context.to_string(),
        continuation,
    }
}

/// A doc whose choices all follow one context, each after lm-eval's target delimiter " ".
fn shared_context(id: String, context: String, choices: Vec<String>, gold: usize) -> ChoiceDoc {
    ChoiceDoc {
        id,
        requests: choices
            .iter()
            .map(|c| cc(&context, format!(" {c}")))
            .collect(),
        choices,
        gold,
        group: None,
    }
}

fn id_of(r: &Record, keys: &[&str], index: usize) -> String {
    keys.iter()
        .find_map(|k| match r.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| index.to_string())
}

/// ARC and OpenBookQA: choices as the original (`question.choices[{text,label}]`) or the Hub
/// lays them out (`choices: {text: [...], label: [...]}`).
fn lettered_choices(r: &Record) -> Result<(Vec<String>, Vec<String>), DataError> {
    let texts_labels = |v: &Value| -> Option<(Vec<String>, Vec<String>)> {
        match v {
            Value::Array(items) => items
                .iter()
                .map(|c| {
                    Some((
                        c.get("text")?.as_str()?.to_string(),
                        c.get("label")?.as_str()?.to_string(),
                    ))
                })
                .collect::<Option<Vec<_>>>()
                .map(|v| v.into_iter().unzip()),
            Value::Object(_) => {
                let list = |k: &str| -> Option<Vec<String>> {
                    v.get(k)?
                        .as_array()?
                        .iter()
                        .map(|s| s.as_str().map(str::to_string))
                        .collect()
                };
                Some((list("text")?, list("label")?))
            }
            _ => None,
        }
    };
    r.value
        .get("question")
        .and_then(|q| q.get("choices"))
        .or_else(|| r.get("choices"))
        .and_then(texts_labels)
        .filter(|(t, l)| !t.is_empty() && t.len() == l.len())
        .ok_or_else(|| {
            r.bad("no choices (expected question.choices[{text, label}] or choices{text, label})")
        })
}

fn gold_by_label(r: &Record, labels: &[String]) -> Result<usize, DataError> {
    let key = r.string("answerKey")?;
    let key = key.trim();
    labels.iter().position(|l| l == key).ok_or_else(|| {
        r.bad(format!(
            "answerKey '{key}' is not one of the labels {labels:?}"
        ))
    })
}

/// lm-eval's HellaSwag preprocessing: strip, " \[title\]" becomes ". ", other bracketed
/// WikiHow artifacts go, double spaces become one.
pub fn hellaswag_preprocess(text: &str) -> String {
    let t = text.trim().replace(" [title]", ". ");
    let mut out = String::with_capacity(t.len());
    let mut rest = t.as_str();
    // `re.sub("\\[.*?\\]", "", text)`: a '[' up to the nearest ']' goes; a '[' without one stays.
    while let Some(open) = rest.find('[') {
        match rest[open..].find(']') {
            Some(close) => {
                out.push_str(&rest[..open]);
                rest = &rest[open + close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}

fn capitalize(s: &str) -> String {
    // Python's str.capitalize: first character upper, the rest lower.
    let mut c = s.chars();
    match c.next() {
        Some(f) => f
            .to_uppercase()
            .chain(c.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

fn int_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// The MMLU prompt of one question (lm-eval's `doc_to_text`).
fn mmlu_text(question: &str, options: &[String]) -> String {
    let mut s = question.trim().to_string();
    for (letter, o) in ["A", "B", "C", "D"].iter().zip(options) {
        s.push_str(&format!("\n{letter}. {o}"));
    }
    s.push_str("\nAnswer:");
    s
}

/// MMLU's description line for a subject (`high_school_biology` -> "high school biology").
fn mmlu_description(subject: &str) -> String {
    format!(
        "The following are multiple choice questions (with answers) about {}.\n\n",
        subject.split('_').collect::<Vec<_>>().join(" ")
    )
}

/// An MMLU question: (question, four options, gold index).
fn mmlu_row(r: &Record) -> Result<(String, Vec<String>, usize), DataError> {
    let question = r.string("question")?;
    let options: Vec<String> = match r.get("choices") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| r.bad("choices must be texts"))?,
        _ => ["A", "B", "C", "D"]
            .iter()
            .map(|k| r.string(k))
            .collect::<Result<_, _>>()?,
    };
    if options.len() != 4 {
        return Err(r.bad(format!("expected 4 options, found {}", options.len())));
    }
    let gold = match r.get("answer") {
        Some(Value::String(s)) => ["A", "B", "C", "D"]
            .iter()
            .position(|l| l == &s.trim())
            .ok_or_else(|| r.bad(format!("answer '{s}' is not A, B, C or D")))?,
        other => int_of(other)
            .filter(|i| (0..4).contains(i))
            .ok_or_else(|| r.bad("answer must be A-D or 0-3"))? as usize,
    };
    Ok((question, options, gold))
}

impl Layout {
    /// One example from one row.
    pub fn doc(self, r: &Record, index: usize) -> Result<ChoiceDoc, DataError> {
        match self {
            Layout::Arc | Layout::OpenBookQa => {
                let stem = r
                    .str_at("question.stem")
                    .or_else(|| r.str_at("question_stem"))
                    .or_else(|| r.str_at("question"))
                    .ok_or_else(|| {
                        r.bad("no question text (question.stem, question_stem or question)")
                    })?;
                let (texts, labels) = lettered_choices(r)?;
                let gold = gold_by_label(r, &labels)?;
                let context = match self {
                    Layout::Arc => format!("Question: {stem}\nAnswer:"),
                    _ => stem.to_string(),
                };
                Ok(shared_context(
                    id_of(r, &["id"], index),
                    context,
                    texts,
                    gold,
                ))
            }
            Layout::Piqa => {
                let goal = r.string("goal")?;
                let choices = vec![r.string("sol1")?, r.string("sol2")?];
                let gold = int_of(r.get("label"))
                    .filter(|l| (0..2).contains(l))
                    .ok_or_else(|| r.bad("label must be 0 or 1"))?
                    as usize;
                Ok(shared_context(
                    index.to_string(),
                    format!("Question: {goal}\nAnswer:"),
                    choices,
                    gold,
                ))
            }
            Layout::Winogrande => {
                let sentence = r.string("sentence")?;
                let blank = sentence
                    .find('_')
                    .ok_or_else(|| r.bad("the sentence has no '_' blank"))?;
                let options = [r.string("option1")?, r.string("option2")?];
                let gold = int_of(r.get("answer"))
                    .filter(|a| (1..=2).contains(a))
                    .ok_or_else(|| r.bad("answer must be 1 or 2"))?
                    as usize
                    - 1;
                let target = sentence[blank + 1..].trim().to_string();
                let choices: Vec<String> = options
                    .iter()
                    .map(|o| format!("{}{o}", &sentence[..blank]))
                    .collect();
                Ok(ChoiceDoc {
                    id: id_of(r, &["qID"], index),
                    requests: choices
                        .iter()
                        .map(|c| cc(c, format!(" {target}")))
                        .collect(),
                    choices,
                    gold,
                    group: None,
                })
            }
            Layout::Boolq => {
                let passage = r.string("passage")?;
                let question = r.string("question")?;
                let gold = int_of(r.get("label"))
                    .filter(|l| (0..2).contains(l))
                    .ok_or_else(|| r.bad("label must be true/false or 0/1"))?
                    as usize;
                Ok(shared_context(
                    id_of(r, &["idx"], index),
                    format!("{passage}\nQuestion: {question}?\nAnswer:"),
                    vec!["no".into(), "yes".into()],
                    gold,
                ))
            }
            Layout::Lambada => {
                let text = r.string("text")?;
                let Some((context, word)) = text.rsplit_once(' ') else {
                    return Err(r.bad("the text has no space before its last word"));
                };
                Ok(ChoiceDoc {
                    id: index.to_string(),
                    choices: vec![word.to_string()],
                    requests: vec![cc(context, format!(" {word}"))],
                    gold: 0,
                    group: None,
                })
            }
            Layout::Mmlu => {
                let (question, options, gold) = mmlu_row(r)?;
                let subject = r.string("subject")?;
                let mut doc = shared_context(
                    index.to_string(),
                    format!(
                        "{}{}",
                        mmlu_description(&subject),
                        mmlu_text(&question, &options)
                    ),
                    vec!["A".into(), "B".into(), "C".into(), "D".into()],
                    gold,
                );
                doc.group = Some(subject);
                Ok(doc)
            }
            Layout::Hellaswag => {
                let ctx = format!("{} {}", r.string("ctx_a")?, capitalize(&r.string("ctx_b")?));
                let query =
                    hellaswag_preprocess(&format!("{}: {ctx}", r.string("activity_label")?));
                let endings: Vec<String> = r
                    .get("endings")
                    .and_then(Value::as_array)
                    .and_then(|a| {
                        a.iter()
                            .map(|e| e.as_str().map(hellaswag_preprocess))
                            .collect()
                    })
                    .ok_or_else(|| r.bad("no endings list"))?;
                let gold = int_of(r.get("label"))
                    .filter(|l| (0..endings.len() as i64).contains(l))
                    .ok_or_else(|| r.bad("label must index the endings"))?
                    as usize;
                Ok(shared_context(
                    id_of(r, &["ind"], index),
                    query,
                    endings,
                    gold,
                ))
            }
            Layout::Sciq => {
                let support = r.string("support")?;
                let question = r.string("question")?;
                let choices = vec![
                    r.string("distractor1")?,
                    r.string("distractor2")?,
                    r.string("distractor3")?,
                    r.string("correct_answer")?,
                ];
                Ok(shared_context(
                    index.to_string(),
                    format!("{}\nQuestion: {question}\nAnswer:", support.trim_start()),
                    choices,
                    3,
                ))
            }
        }
    }
}

/// Where a task's files are inside `--data-dir`, tried in order.
#[derive(Debug, Clone, Copy)]
pub struct LocalFiles {
    pub candidates: &'static [&'static str],
    /// What to pass instead, in the missing-file error.
    pub hint: &'static str,
}

fn find(dir: &Path, files: &LocalFiles) -> PathBuf {
    files
        .candidates
        .iter()
        .map(|c| dir.join(c))
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join(files.candidates[0]))
}

/// The rows of a task from its local files.
pub fn read_local(
    layout: Layout,
    dir: &Path,
    files: &LocalFiles,
) -> Result<(Vec<Record>, String), DataError> {
    let path = find(dir, files);
    match layout {
        Layout::Mmlu => read_mmlu_dir(&path, "test", files.hint),
        Layout::Sciq => Ok((
            read_json_array(&path, files.hint)?,
            path.display().to_string(),
        )),
        Layout::Piqa => {
            let mut rows = read_jsonl(&path, files.hint)?;
            let labels_path = path.with_file_name(
                path.file_name()
                    .and_then(|n| n.to_str())
                    .map_or("valid-labels.lst".to_string(), |n| {
                        n.replace(".jsonl", "-labels.lst")
                    }),
            );
            let labels = read_labels(&labels_path)?;
            if labels.len() != rows.len() {
                return Err(DataError::Malformed {
                    origin: labels_path.display().to_string(),
                    line: labels.len(),
                    message: format!(
                        "{} labels for {} examples in {}",
                        labels.len(),
                        rows.len(),
                        path.display()
                    ),
                });
            }
            for (r, (_, l)) in rows.iter_mut().zip(labels) {
                if let Value::Object(m) = &mut r.value {
                    m.insert("label".into(), Value::String(l));
                }
            }
            Ok((rows, path.display().to_string()))
        }
        _ => Ok((read_jsonl(&path, files.hint)?, path.display().to_string())),
    }
}

/// MMLU's folder of `<subject>_<split>.csv` files (`test/` or `dev/`), subjects in name order,
/// each row given its subject.
pub fn read_mmlu_dir(
    dir: &Path,
    split: &str,
    hint: &str,
) -> Result<(Vec<Record>, String), DataError> {
    if !dir.is_dir() {
        return Err(DataError::MissingFile {
            path: dir.to_path_buf(),
            hint: hint.into(),
        });
    }
    let suffix = format!("_{split}.csv");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix))
        })
        .collect();
    files.sort();
    let mut rows = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let subject = name.trim_end_matches(&suffix).to_string();
        let origin = path.display().to_string();
        let text = read_utf8(path, hint)?;
        for (line, fields) in parse_csv(&origin, &text)? {
            if fields.len() != 6 {
                return Err(DataError::Malformed {
                    origin,
                    line,
                    message: format!(
                        "expected 6 comma-separated fields (question, A, B, C, D, answer), found {}",
                        fields.len()
                    ),
                });
            }
            let mut m = serde_json::Map::new();
            for (k, v) in ["question", "A", "B", "C", "D", "answer"]
                .iter()
                .zip(fields)
            {
                m.insert(k.to_string(), Value::String(v));
            }
            m.insert("subject".into(), Value::String(subject.clone()));
            rows.push(Record {
                value: Value::Object(m),
                origin: origin.clone(),
                line,
            });
        }
    }
    Ok((
        rows,
        format!("{} ({} subjects)", dir.display(), files.len()),
    ))
}

/// Rows of a Hub split, already read from its parquet file as column -> value.
pub fn hub_records(origin: &str, rows: &[BTreeMap<String, Value>]) -> Vec<Record> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| Record {
            value: Value::Object(r.clone().into_iter().collect()),
            origin: origin.to_string(),
            line: i + 1,
        })
        .collect()
}

/// Every row as an example; `limit` keeps the first N (MMLU: the first N of each subject,
/// as lm-eval limits each subject task).
pub fn build(
    layout: Layout,
    scoring: Scoring,
    rows: &[Record],
    origin: &str,
    limit: Option<usize>,
) -> Result<ChoiceSet, DataError> {
    let mut docs = Vec::new();
    let mut per_group: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        let doc = layout.doc(r, i)?;
        if let Some(n) = limit {
            let seen = per_group
                .entry(doc.group.clone().unwrap_or_default())
                .or_default();
            if *seen >= n {
                continue;
            }
            *seen += 1;
        }
        docs.push(doc);
    }
    if docs.is_empty() {
        return Err(DataError::Empty {
            origin: origin.to_string(),
        });
    }
    Ok(ChoiceSet {
        docs,
        origin: origin.to_string(),
        scoring,
    })
}

/// MMLU few-shot: the first `n` dev questions of each doc's subject, answered, before it
/// (lm-eval's `first_n` sampler, examples joined by a blank line).
pub fn add_mmlu_fewshot(set: &mut ChoiceSet, dev: &[Record], n: usize) -> Result<(), DataError> {
    let mut shots: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in dev {
        let (q, options, gold) = mmlu_row(r)?;
        let subject = r.string("subject")?;
        let list = shots.entry(subject).or_default();
        if list.len() < n {
            list.push(format!(
                "{} {}",
                mmlu_text(&q, &options),
                ["A", "B", "C", "D"][gold]
            ));
        }
    }
    for doc in &mut set.docs {
        let subject = doc.group.clone().unwrap_or_default();
        let examples = shots.get(&subject).map(Vec::as_slice).unwrap_or_default();
        if examples.len() < n {
            return Err(DataError::Other(format!(
                "--num-fewshot {n}: the dev split has {} questions of {subject}",
                examples.len()
            )));
        }
        let description = mmlu_description(&subject);
        for req in &mut doc.requests {
            let body = req
                .context
                .strip_prefix(&description)
                .unwrap_or(&req.context)
                .to_string();
            req.context = format!("{description}{}\n\n{body}", examples.join("\n\n"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: Value) -> Record {
        Record {
            value: v,
            origin: "f.jsonl".into(),
            line: 3,
        }
    }

    #[test]
    fn csv_handles_quotes_doubled_quotes_commas_and_line_breaks() {
        let rows = parse_csv(
            "x.csv",
            "\"Find, the \"\"degree\"\"\",0,4\r\nplain,\"two\nlines\",C\n\nlast,1,2",
        )
        .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            (
                1,
                vec!["Find, the \"degree\"".into(), "0".into(), "4".into()]
            )
        );
        assert_eq!(
            rows[1],
            (2, vec!["plain".into(), "two\nlines".into(), "C".into()])
        );
        assert_eq!(rows[2].0, 5);
        let err = parse_csv("x.csv", "a,\"open\n").unwrap_err().to_string();
        assert_eq!(err, "x.csv:1: a quoted field is never closed");
    }

    #[test]
    fn arc_reads_the_original_and_the_hub_layout_alike() {
        let original = rec(serde_json::json!({"id": "q1", "question": {"stem": "Why?",
            "choices": [{"text": "because", "label": "A"}, {"text": "so", "label": "B"}]},
            "answerKey": "B"}));
        let hub = rec(serde_json::json!({"id": "q1", "question": "Why?",
            "choices": {"text": ["because", "so"], "label": ["A", "B"]}, "answerKey": "B"}));
        let a = Layout::Arc.doc(&original, 0).unwrap();
        assert_eq!(a, Layout::Arc.doc(&hub, 0).unwrap());
        assert_eq!(a.requests[0].context, "Question: Why?\nAnswer:");
        assert_eq!(a.requests[1].continuation, " so");
        assert_eq!(a.choices, ["because", "so"]);
        assert_eq!((a.gold, a.id.as_str()), (1, "q1"));
        // Numeric answer keys (some ARC rows) must match numeric labels.
        let bad = rec(
            serde_json::json!({"question": {"stem": "?", "choices": [{"text": "x", "label": "1"}]}, "answerKey": "A"}),
        );
        let e = Layout::Arc.doc(&bad, 0).unwrap_err().to_string();
        assert_eq!(
            e,
            "f.jsonl:3: answerKey 'A' is not one of the labels [\"1\"]"
        );
    }

    #[test]
    fn winogrande_scores_the_shared_suffix_after_each_filled_blank() {
        let r = rec(
            serde_json::json!({"sentence": "Sarah was better than Maria so _ got the easy cases.",
            "option1": "Sarah", "option2": "Maria", "answer": "2"}),
        );
        let d = Layout::Winogrande.doc(&r, 0).unwrap();
        assert_eq!(d.gold, 1);
        assert_eq!(
            d.requests[0].context,
            "Sarah was better than Maria so Sarah"
        );
        assert_eq!(
            d.requests[1].context,
            "Sarah was better than Maria so Maria"
        );
        assert_eq!(d.requests[0].continuation, " got the easy cases.");
        assert_eq!(d.choices[1], d.requests[1].context);
    }

    #[test]
    fn boolq_lambada_piqa_and_sciq_prompts() {
        let b = Layout::Boolq
            .doc(&rec(serde_json::json!({"question": "is it", "passage": "P.", "idx": 7, "label": true})), 0)
            .unwrap();
        assert_eq!(b.requests[1].context, "P.\nQuestion: is it?\nAnswer:");
        assert_eq!(
            (b.gold, b.id.as_str(), b.requests[1].continuation.as_str()),
            (1, "7", " yes")
        );
        let l = Layout::Lambada
            .doc(&rec(serde_json::json!({"text": "he said  hello there"})), 4)
            .unwrap();
        assert_eq!(l.requests[0].context, "he said  hello");
        assert_eq!(l.requests[0].continuation, " there");
        let p = Layout::Piqa
            .doc(
                &rec(serde_json::json!({"goal": "g", "sol1": "a", "sol2": "b", "label": "1"})),
                0,
            )
            .unwrap();
        assert_eq!(
            (p.requests[0].context.as_str(), p.gold),
            ("Question: g\nAnswer:", 1)
        );
        let s = Layout::Sciq
            .doc(
                &rec(
                    serde_json::json!({"support": "  S", "question": "Q", "distractor1": "a",
                "distractor2": "b", "distractor3": "c", "correct_answer": "d"}),
                ),
                0,
            )
            .unwrap();
        assert_eq!(s.requests[3].context, "S\nQuestion: Q\nAnswer:");
        assert_eq!((s.gold, s.choices[3].as_str()), (3, "d"));
    }

    #[test]
    fn hellaswag_preprocessing_follows_lm_eval() {
        assert_eq!(
            hellaswag_preprocess(" Home [title] How to  cook [step] Boil it. "),
            "Home. How to cook Boil it."
        );
        let r = rec(
            serde_json::json!({"activity_label": "Baking", "ctx_a": "A man mixes.",
            "ctx_b": "he THEN", "endings": ["bakes [header] it.", "sleeps"], "label": "0", "ind": 9}),
        );
        let d = Layout::Hellaswag.doc(&r, 0).unwrap();
        assert_eq!(d.requests[0].context, "Baking: A man mixes. He then");
        assert_eq!(d.choices, ["bakes it.", "sleeps"]);
        assert_eq!((d.gold, d.id.as_str()), (0, "9"));
    }

    #[test]
    fn mmlu_reads_a_subject_folder_with_lm_evals_prompt_and_fewshot() {
        let dir = tempfile::tempdir().unwrap();
        let test = dir.path().join("test");
        let dev = dir.path().join("dev");
        std::fs::create_dir_all(&test).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(
            test.join("college_math_test.csv"),
            "\"What is 1+1, really?\",1,2,3,4,B\nq2,a,b,c,d,D\n",
        )
        .unwrap();
        std::fs::write(test.join("anatomy_test.csv"), "Bones?,206,12,3,1,A\n").unwrap();
        std::fs::write(dev.join("college_math_dev.csv"), "2+2?,1,4,3,2,B\n").unwrap();
        std::fs::write(dev.join("anatomy_dev.csv"), "Heart?,1,2,3,4,A\n").unwrap();
        let (rows, origin) = read_mmlu_dir(&test, "test", "h").unwrap();
        assert!(origin.ends_with("(2 subjects)"), "{origin}");
        let set = build(
            Layout::Mmlu,
            Scoring::MultipleChoice { normalised: false },
            &rows,
            &origin,
            None,
        )
        .unwrap();
        assert_eq!(set.docs.len(), 3);
        let d = &set.docs[1];
        assert_eq!(d.group.as_deref(), Some("college_math"));
        assert_eq!(
            d.requests[0].context,
            "The following are multiple choice questions (with answers) about college math.\n\n\
             What is 1+1, really?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
        );
        assert_eq!((d.gold, d.requests[2].continuation.as_str()), (1, " C"));
        // --limit 1 keeps the first question of each subject.
        assert_eq!(
            build(
                Layout::Mmlu,
                Scoring::MultipleChoice { normalised: false },
                &rows,
                &origin,
                Some(1)
            )
            .unwrap()
            .docs
            .len(),
            2
        );
        let mut shot = set.clone();
        let (dev_rows, _) = read_mmlu_dir(&dev, "dev", "h").unwrap();
        add_mmlu_fewshot(&mut shot, &dev_rows, 1).unwrap();
        assert_eq!(
            shot.docs[1].requests[0].context,
            "The following are multiple choice questions (with answers) about college math.\n\n\
             2+2?\nA. 1\nB. 4\nC. 3\nD. 2\nAnswer: B\n\n\
             What is 1+1, really?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
        );
        let e = add_mmlu_fewshot(&mut set.clone(), &dev_rows, 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the dev split has 1 questions of anatomy"),
            "{e}"
        );
        std::fs::write(test.join("bad_test.csv"), "q,a,b,c\n").unwrap();
        let e = read_mmlu_dir(&test, "test", "h").err().unwrap().to_string();
        assert!(
            e.contains("bad_test.csv:1: expected 6 comma-separated fields"),
            "{e}"
        );
    }

    #[test]
    fn piqa_reads_its_labels_file_and_counts_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("piqa");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(
            p.join("valid.jsonl"),
            "{\"goal\":\"g\",\"sol1\":\"a\",\"sol2\":\"b\"}\n",
        )
        .unwrap();
        std::fs::write(p.join("valid-labels.lst"), "1\n").unwrap();
        let files = LocalFiles {
            candidates: &["piqa/valid.jsonl"],
            hint: "h",
        };
        let (rows, origin) = read_local(Layout::Piqa, dir.path(), &files).unwrap();
        assert_eq!(
            build(
                Layout::Piqa,
                Scoring::MultipleChoice { normalised: false },
                &rows,
                &origin,
                None
            )
            .unwrap()
            .docs[0]
                .gold,
            1
        );
        std::fs::write(p.join("valid-labels.lst"), "1\n0\n").unwrap();
        let e = read_local(Layout::Piqa, dir.path(), &files)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("2 labels for 1 examples"), "{e}");
    }

    #[test]
    fn an_empty_file_and_a_bad_line_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.jsonl");
        std::fs::write(&f, "\n").unwrap();
        let rows = read_jsonl(&f, "h").unwrap();
        let e = build(
            Layout::Boolq,
            Scoring::MultipleChoice { normalised: false },
            &rows,
            "t.jsonl",
            None,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "t.jsonl: the data set is empty (no example rows)");
        std::fs::write(&f, "{\"text\": \"a b\"}\n{oops\n").unwrap();
        let e = read_jsonl(&f, "h").err().unwrap().to_string();
        assert!(e.contains("t.jsonl:2: not a JSON object"), "{e}");
    }
}
