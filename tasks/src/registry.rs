//! The one list of tasks. Adding a task means adding one line here. Classification and
//! regression tasks (GLUE) and language-modelling tasks share one name space.

use crate::choice;
use crate::generation::tasks::{self as lm, LmTask};
use crate::glue;
use crate::Task;

/// Every task the harness knows, in the order `harness list tasks` prints them.
pub static REGISTRY: &[&dyn Task] = &[
    &glue::COLA,
    &glue::SST2,
    &glue::MRPC,
    &glue::STSB,
    &glue::QQP,
    &glue::MNLI,
    &glue::QNLI,
    &glue::RTE,
    &glue::WNLI,
];

/// Language-modelling tasks, for decoders.
pub static LM_REGISTRY: &[&dyn LmTask] = &[
    &lm::WIKITEXT2,
    &lm::WIKITEXT103,
    &lm::GENERATE,
    &choice::ARC_EASY,
    &choice::ARC_CHALLENGE,
    &choice::PIQA,
    &choice::WINOGRANDE,
    &choice::BOOLQ,
    &choice::LAMBADA_OPENAI,
    &choice::MMLU,
    &choice::HELLASWAG,
    &choice::OPENBOOKQA,
    &choice::SCIQ,
];

/// A task of either kind.
#[derive(Clone, Copy)]
pub enum AnyTask {
    /// Classification or regression on text (encoders).
    Text(&'static dyn Task),
    /// Perplexity or generation (decoders).
    Lm(&'static dyn LmTask),
}

impl AnyTask {
    pub fn name(&self) -> &'static str {
        match self {
            AnyTask::Text(t) => t.name(),
            AnyTask::Lm(t) => t.name(),
        }
    }
    pub fn description(&self) -> &'static str {
        match self {
            AnyTask::Text(t) => t.description(),
            AnyTask::Lm(t) => t.description(),
        }
    }
    pub fn version(&self) -> u32 {
        match self {
            AnyTask::Text(t) => t.version(),
            AnyTask::Lm(t) => t.version(),
        }
    }
}

/// Every task, in the order `harness list tasks` prints them.
pub fn all_tasks() -> Vec<AnyTask> {
    REGISTRY
        .iter()
        .map(|t| AnyTask::Text(*t))
        .chain(LM_REGISTRY.iter().map(|t| AnyTask::Lm(*t)))
        .collect()
}

/// Names of all registered tasks.
pub fn task_names() -> Vec<&'static str> {
    all_tasks().iter().map(|t| t.name()).collect()
}

/// Look a classification or regression task up by name; see [`find_any_task`].
pub fn find_task(name: &str) -> Result<&'static dyn Task, String> {
    match find_any_task(name)? {
        AnyTask::Text(t) => Ok(t),
        AnyTask::Lm(t) => Err(format!(
            "'{}' is a language-modelling task, not a classification task",
            t.name()
        )),
    }
}

/// Look a task up by name (case-insensitive; `sst-2` and `SST2` find `sst2`). An unknown name
/// gets an error that suggests the closest registered name.
pub fn find_any_task(name: &str) -> Result<AnyTask, String> {
    let wanted = normalise(name);
    if let Some(task) = all_tasks()
        .into_iter()
        .find(|t| normalise(t.name()) == wanted)
    {
        return Ok(task);
    }
    let closest = closest_name(&wanted, &task_names());
    let mut msg = format!("unknown task '{name}'");
    if let Some(c) = closest {
        msg.push_str(&format!(" (did you mean '{c}'?)"));
    }
    msg.push_str(&format!("; known tasks: {}", task_names().join(", ")));
    Err(msg)
}

fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The candidate with the smallest edit distance, if it is close enough to be a plausible typo.
pub fn closest_name<'a>(wanted: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(wanted, &normalise(c)), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn registry_has_no_duplicate_names() {
        let names = task_names();
        let unique: BTreeSet<_> = names.iter().map(|n| normalise(n)).collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "duplicate task names in {names:?}"
        );
    }

    #[test]
    fn registry_covers_glue() {
        for name in [
            "cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli",
        ] {
            assert!(find_task(name).is_ok(), "{name} missing");
        }
    }

    #[test]
    fn registry_covers_language_modelling() {
        for name in ["wikitext2", "wikitext103", "generate"] {
            assert!(
                matches!(find_any_task(name), Ok(AnyTask::Lm(_))),
                "{name} missing"
            );
        }
        assert_eq!(
            find_any_task("WikiText-2").ok().map(|t| t.name()),
            Some("wikitext2")
        );
        let err = find_any_task("wikitext3").err().unwrap();
        assert!(err.contains("did you mean 'wikitext2'"), "{err}");
    }

    #[test]
    fn lookup_is_forgiving_about_case_and_dashes() {
        assert_eq!(find_task("SST-2").unwrap().name(), "sst2");
        assert_eq!(find_task("STS-B").unwrap().name(), "stsb");
    }

    #[test]
    fn unknown_task_suggests_closest() {
        let err = find_task("sts2").err().unwrap();
        assert!(err.contains("unknown task 'sts2'"), "{err}");
        assert!(
            err.contains("did you mean 'sst2'") || err.contains("did you mean 'stsb'"),
            "{err}"
        );
        let err = find_task("mnlii").err().unwrap();
        assert!(err.contains("did you mean 'mnli'"), "{err}");
        let err = find_task("zzzzzzzz").err().unwrap();
        assert!(!err.contains("did you mean"), "{err}");
    }
}
