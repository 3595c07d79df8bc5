//! Mapping a classification head's labels (`id2label` in `config.json`) onto a task's labels.
//!
//! Names are matched after normalisation (case, underscores and spaces ignored) and a few
//! common synonyms (`pos`, `LABEL_1` for binary tasks...). Unnamed labels (`LABEL_0`, ...) are
//! taken in GLUE order only for binary tasks, where every public checkpoint we know follows
//! the GLUE files; for three-way MNLI the order differs between checkpoints, so unnamed labels
//! are refused rather than risking a silent mis-scoring.

use tasks::{Task, TaskKind};

fn normalise(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Other names checkpoints use for each task label (normalised).
fn synonyms(task_label: &str) -> &'static [&'static str] {
    match task_label {
        "negative" => &["negative", "neg"],
        "positive" => &["positive", "pos"],
        "unacceptable" => &["unacceptable", "notacceptable"],
        "acceptable" => &["acceptable"],
        "not_equivalent" => &["notequivalent", "notparaphrase"],
        "equivalent" => &["equivalent", "paraphrase"],
        "not_duplicate" => &["notduplicate"],
        "duplicate" => &["duplicate"],
        "entailment" => &["entailment", "entails", "entail"],
        "not_entailment" => &["notentailment"],
        "neutral" => &["neutral"],
        "contradiction" => &["contradiction", "contradicts", "contradict"],
        _ => &[],
    }
}

fn is_generic(name: &str) -> bool {
    let n = normalise(name);
    n.strip_prefix("label")
        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
}

/// For each head output, the index of the task label it stands for. Errors say what was found
/// and how to fix it.
pub fn map_head_labels(head: &[String], task: &dyn Task) -> Result<Vec<usize>, String> {
    let task_labels = task.labels();
    if task.kind() == TaskKind::Regression {
        return if head.len() == 1 {
            Ok(vec![0])
        } else {
            Err(format!(
                "{} is a regression task but the checkpoint's head has {} outputs ({}); it needs a one-output regression head, or a sentence encoder scored by cosine similarity",
                task.name(),
                head.len(),
                head.join(", ")
            ))
        };
    }
    if head.len() != task_labels.len() {
        return Err(format!(
            "the checkpoint's head has {} outputs ({}) but {} has {} labels ({}); is this checkpoint fine-tuned for another task?",
            head.len(),
            head.join(", "),
            task.name(),
            task_labels.len(),
            task_labels.join(", ")
        ));
    }
    if head.iter().all(|h| is_generic(h)) {
        if task_labels.len() == 2 {
            return head
                .iter()
                .map(|h| {
                    let i: usize = normalise(h)["label".len()..].parse().unwrap_or(usize::MAX);
                    if i < 2 {
                        Ok(i)
                    } else {
                        Err(format!(
                            "head label {h} is out of range for {}",
                            task.name()
                        ))
                    }
                })
                .collect();
        }
        return Err(format!(
            "the checkpoint's labels are unnamed ({}) and {} label orders differ between public checkpoints; name them in config.json's id2label (e.g. {})",
            head.join(", "),
            task.name(),
            task_labels
                .iter()
                .enumerate()
                .map(|(i, l)| format!("\"{i}\": \"{l}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut mapping = Vec::with_capacity(head.len());
    for h in head {
        let n = normalise(h);
        let found = task_labels
            .iter()
            .position(|t| synonyms(t).contains(&n.as_str()) || normalise(t) == n);
        match found {
            Some(i) if !mapping.contains(&i) => mapping.push(i),
            _ => {
                return Err(format!(
                    "cannot map the checkpoint's label '{h}' (labels: {}) to {}'s labels ({})",
                    head.join(", "),
                    task.name(),
                    task_labels.join(", ")
                ))
            }
        }
    }
    Ok(mapping)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn maps_reordered_mnli_names() {
        let m = map_head_labels(
            &names(&["CONTRADICTION", "ENTAILMENT", "NEUTRAL"]),
            &tasks::glue::MNLI,
        )
        .unwrap();
        assert_eq!(m, vec![2, 0, 1]);
    }

    #[test]
    fn maps_sentiment_names_and_generic_binary() {
        assert_eq!(
            map_head_labels(&names(&["NEGATIVE", "POSITIVE"]), &tasks::glue::SST2).unwrap(),
            vec![0, 1]
        );
        assert_eq!(
            map_head_labels(&names(&["LABEL_0", "LABEL_1"]), &tasks::glue::RTE).unwrap(),
            vec![0, 1]
        );
        assert_eq!(
            map_head_labels(
                &names(&["not_entailment", "entailment"]),
                &tasks::glue::QNLI
            )
            .unwrap(),
            vec![1, 0]
        );
    }

    #[test]
    fn refuses_unnamed_three_way_labels() {
        let err = map_head_labels(
            &names(&["LABEL_0", "LABEL_1", "LABEL_2"]),
            &tasks::glue::MNLI,
        )
        .unwrap_err();
        assert!(err.contains("label orders differ"), "{err}");
    }

    #[test]
    fn refuses_wrong_task_head() {
        let err =
            map_head_labels(&names(&["NEGATIVE", "POSITIVE"]), &tasks::glue::MNLI).unwrap_err();
        assert!(err.contains("head has 2 outputs"), "{err}");
        let err =
            map_head_labels(&names(&["NEGATIVE", "POSITIVE"]), &tasks::glue::MRPC).unwrap_err();
        assert!(
            err.contains("cannot map the checkpoint's label 'NEGATIVE'"),
            "{err}"
        );
        let err = map_head_labels(&names(&["a", "b"]), &tasks::glue::STSB).unwrap_err();
        assert!(err.contains("regression task"), "{err}");
    }
}
